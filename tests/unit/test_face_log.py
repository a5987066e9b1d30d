"""The service's face log: one line per face of its summary and never its pixels, whole lines from
many threads, rotation, windows, corrupt lines; and the penultimate-layer embedding it keeps, the
same from the LiteRT and the Keras runtime."""

import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import pytest

from ferlab.contract import EMOTIONS, normalize
from ferlab.errors import FerlabError
from ferlab.inference.detect import Detection
from ferlab.inference.face_summary import EMBEDDING_DIM, Penultimate, projection, summarize
from ferlab.inference.predict import EmotionRecognizer
from ferlab.inference.sources import load_model
from ferlab.litert import TFLiteModel, with_penultimate_output
from ferlab.serve.face_log import FaceLog, log_files, read_window

FIELDS = {"time", "model", "emotion", "top_probability", "probabilities", "face_size", "brightness", "sharpness", "embedding"}


@pytest.fixture(scope="module")
def fast():
    return EmotionRecognizer.load("pretrained:fast")


class BareRecognizer:
    """A recognizer whose classifier is a bare function: no penultimate layer to log."""

    classifier = staticmethod(lambda x: np.full((len(x), 7), 1 / 7, np.float32))


def boxes(n: int, side: int = 96) -> list[Detection]:
    return [Detection((10 * i, 20, side, side - 8), 0.9) for i in range(n)]


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_face_is_one_line_of_its_summary_and_never_its_pixels(fast, fer_faces, tmp_path):
    crops = fer_faces[0][:3]
    probabilities = fast.classify(crops)
    log = FaceLog(tmp_path / "logs" / "faces.jsonl")
    log.observe(fast, boxes(3), crops, probabilities, "pretrained:fast")
    log.observe(fast, [], crops[:0], probabilities[:0], "pretrained:fast")  # an image without a face writes nothing
    log.flush()
    rows = lines(tmp_path / "logs" / "faces.jsonl")
    assert len(rows) == 3 and log.faces == 3 and log.dropped == 0
    for row, crop, p in zip(rows, crops, probabilities):
        assert set(row) == FIELDS and row["model"] == "pretrained:fast"
        assert list(row["probabilities"]) == list(EMOTIONS) and np.allclose(list(row["probabilities"].values()), p, atol=1e-5)
        assert row["emotion"] == EMOTIONS[int(p.argmax())] and row["top_probability"] == pytest.approx(p.max(), abs=1e-5)
        assert row["face_size"] == 96  # the box's longer side
        assert row["brightness"] == pytest.approx(crop.mean(), abs=0.01)
        assert row["sharpness"] == pytest.approx(cv2.Laplacian(crop, cv2.CV_64F).var(), rel=1e-4)
        assert len(row["embedding"]) == EMBEDDING_DIM
        assert datetime.fromisoformat(row["time"]).tzinfo is not None
    # nothing in a line could give the face back: no list longer than the embedding, and ~600 bytes a face
    text = (tmp_path / "logs" / "faces.jsonl").read_text()
    assert max(len(v) for row in rows for v in row.values() if isinstance(v, list)) == EMBEDDING_DIM
    assert len(text) / 3 < 1000 < crops[0].size


def test_the_embedding_tells_faces_apart_and_is_the_same_each_time(fast, fer_faces, tmp_path):
    crops = fer_faces[0][:20]
    rows = summarize([(0, 0, 48, 48)] * 20, crops, fast.classify(crops), None, Penultimate.of(fast.classifier))
    again = summarize([(0, 0, 48, 48)] * 20, crops, fast.classify(crops), None, Penultimate.of(fast.classifier))
    e = np.array([r["embedding"] for r in rows])
    assert np.array_equal(e, np.array([r["embedding"] for r in again]))
    assert np.linalg.norm(e - e.mean(axis=0), axis=1).min() > 0.1  # not a constant
    dark = summarize([(0, 0, 48, 48)] * 20, (crops * 0.4).astype(np.uint8), fast.classify(crops), None, Penultimate.of(fast.classifier))
    assert np.abs(np.array([r["embedding"] for r in dark]) - e).mean() > 0.05


def test_the_tflite_penultimate_output_leaves_the_model_as_it_was(fer_faces):
    from ferlab.lifecycle import pretrained

    path = pretrained.verified_folder("pretrained:fast") / "model.tflite"
    before = path.read_bytes()
    content, name = with_penultimate_output(path)
    assert path.read_bytes() == before  # the shipped file is not touched
    x = normalize(fer_faces[0][:16])
    both = TFLiteModel(path, threads=1, content=content).run(x)
    alone = TFLiteModel(path, threads=1).run(x)
    (probabilities,) = alone.values()
    assert set(both) == {*alone, name} and both[name].shape == (16, 256)
    assert np.array_equal(both[next(iter(alone))], probabilities)


def test_both_runtimes_give_the_same_embedding(tiny_bundle, fer_faces):
    import keras

    crops = fer_faces[0][:24]
    tflite, _ = load_model(tiny_bundle)
    keras_classifier, _ = load_model(tiny_bundle, runtime="keras")
    from_tflite, from_keras = Penultimate.of(tflite), Penultimate.of(keras_classifier)
    assert (from_tflite.runtime, from_keras.runtime, from_tflite.width, from_keras.width) == ("tflite", "keras", 256, 256)
    # the Keras copy cuts the model at the last dense layer's input: its 256 ReLU units
    model = keras_classifier.model
    cut = keras.Model(model.input, [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1].input)
    want = cut(normalize(crops), training=False).numpy() @ projection(256)
    assert np.allclose(from_keras(crops), want, atol=1e-4)
    assert np.abs(from_tflite(crops) - want).max() < 0.02 * np.abs(want).max()  # float16 weights


def test_a_runtime_without_a_penultimate_layer_logs_without_an_embedding(fer_faces, tmp_path):
    log = FaceLog(tmp_path / "faces.jsonl")
    log.observe(BareRecognizer(), boxes(2), fer_faces[0][:2], np.full((2, 7), 1 / 7, np.float32), None)
    log.close()
    rows = lines(tmp_path / "faces.jsonl")
    assert [r["embedding"] for r in rows] == [None, None] and rows[0]["model"] is None


def test_many_threads_write_whole_lines(fer_faces, tmp_path):
    log = FaceLog(tmp_path / "faces.jsonl")
    crops = fer_faces[0][:2]
    probabilities = np.full((2, 7), 1 / 7, np.float32)

    def worker(n):
        for _ in range(50):
            log.observe(BareRecognizer(), boxes(2), crops, probabilities, f"v{n}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    rows = lines(tmp_path / "faces.jsonl")  # every line parses: none was torn or interleaved
    assert len(rows) == log.faces == 8 * 50 * 2
    assert {r["model"]: 0 for r in rows}.keys() == {f"v{n}" for n in range(8)}


def test_the_log_rotates_keeps_its_newest_files_and_is_read_oldest_first(tmp_path):
    path = tmp_path / "faces.jsonl"
    log = FaceLog(path, max_bytes=2000, keep=2)
    start = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
    crops = np.full((1, 48, 48), 128, np.uint8)
    for i in range(40):
        log.write(summarize([(0, 0, 48, 48)], crops, np.eye(7, dtype=np.float32)[[i % 7]], f"n{i}", when=start + timedelta(seconds=i)))
    assert [p.name for p in log_files(path)] == ["faces.jsonl.2", "faces.jsonl.1", "faces.jsonl"]
    assert all(p.stat().st_size < 2000 + 400 for p in log_files(path))
    window = read_window(path)
    numbers = [int(r["model"][1:]) for r in window.rows]
    assert numbers == sorted(numbers) and numbers[-1] == 39 and numbers[0] > 0  # the oldest file was dropped
    assert window.corrupt == 0 and window.lines == len(numbers)


def test_windows_by_time_and_count(tmp_path):
    path = tmp_path / "faces.jsonl"
    log = FaceLog(path)
    start = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
    crops = np.full((1, 48, 48), 128, np.uint8)
    for i in range(10):
        log.write(summarize([(0, 0, 48, 48)], crops, np.eye(7, dtype=np.float32)[[0]], "v", when=start + timedelta(minutes=i)))
    assert len(read_window(path, since=start + timedelta(minutes=3)).rows) == 7
    assert len(read_window(path, until=start + timedelta(minutes=3)).rows) == 3
    assert len(read_window(path, since=start + timedelta(minutes=2), last=4).rows) == 4
    assert read_window(path, last=2).rows[-1]["time"] == (start + timedelta(minutes=9)).isoformat(timespec="milliseconds")
    assert read_window(path).models == {"v": 10}


def test_corrupt_lines_are_counted_and_skipped(tmp_path):
    path = tmp_path / "faces.jsonl"
    log = FaceLog(path)
    crops = np.full((2, 48, 48), 128, np.uint8)
    log.write(summarize([(0, 0, 48, 48)] * 2, crops, np.eye(7, dtype=np.float32)[[0, 1]], "v"))
    with open(path, "a") as f:
        f.write('{"time": "2026-12-07T09:00:00+00:00", "probabil\n')  # a torn line
        f.write("not json at all\n")
        f.write('{"time": "yesterday", "probabilities": {}}\n')  # no readable time
    log.write(summarize([(0, 0, 48, 48)], crops[:1], np.eye(7, dtype=np.float32)[[2]], "v"))
    window = read_window(path)
    assert (len(window.rows), window.corrupt, window.lines) == (3, 3, 6)
    assert window.first_corrupt == f"{path}:3"


def test_a_missing_log_is_one_sentence(tmp_path):
    with pytest.raises(FerlabError, match=r"^no face log at .*nowhere\.jsonl; start the service with --face-log"):
        read_window(tmp_path / "nowhere.jsonl")
    (tmp_path / "file").write_text("")
    with pytest.raises(FerlabError, match=r"^cannot write the face log .*; choose a writable path\.$"):
        FaceLog(tmp_path / "file" / "faces.jsonl")


def test_a_failed_write_never_fails_the_request(fer_faces, tmp_path, monkeypatch, caplog):
    log = FaceLog(tmp_path / "faces.jsonl")

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    log.observe(BareRecognizer(), boxes(2), fer_faces[0][:2], np.full((2, 7), 1 / 7, np.float32), "v")
    log.flush()
    assert (log.faces, log.dropped) == (0, 2)
    assert "2 faces not written" in caplog.text and "No space left on device" in caplog.text


def test_observe_never_waits_for_the_log(fer_faces, tmp_path, monkeypatch):
    """The summaries and the write happen on the log's thread; a log that falls behind drops faces, counted."""
    import ferlab.serve.face_log as face_log

    entered, release = threading.Event(), threading.Event()

    def slow(*args, **kwargs):
        entered.set()
        assert release.wait(10)
        return summarize(*args, **kwargs)

    monkeypatch.setattr(face_log, "summarize", slow)
    log = FaceLog(tmp_path / "faces.jsonl", max_pending=2)
    crops, probabilities = fer_faces[0][:2].copy(), np.full((2, 7), 1 / 7, np.float32)
    log.observe(BareRecognizer(), boxes(2), crops, probabilities, "v")
    assert entered.wait(10)  # the log's thread holds the first image
    start = time.perf_counter()
    for _ in range(5):  # two more queued, three dropped
        log.observe(BareRecognizer(), boxes(2), crops, probabilities, "v")
    assert time.perf_counter() - start < 0.5 and log.faces == 0
    crops[:] = 0  # the caller may reuse its arrays: the log keeps copies
    release.set()
    log.close()
    rows = lines(tmp_path / "faces.jsonl")
    assert (len(rows), log.faces, log.dropped) == (6, 6, 6)
    assert all(r["brightness"] > 0 for r in rows)
    log.observe(BareRecognizer(), boxes(2), crops, probabilities, "v")  # after close: nothing, no error
    log.flush()
    assert len(lines(tmp_path / "faces.jsonl")) == 6
