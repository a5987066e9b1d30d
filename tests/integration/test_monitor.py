"""`ferlab monitor` end to end: face logs written by FaceLog.observe from real FER2013 faces, the
reference built from the real archive's PrivateTest through the shipped model, Evidently's tests.
A window of clean PublicTest faces does not drift; the same faces darkened, or blurred, do."""

import contextlib
import io
import json
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import pytest

from ferlab import cli
from ferlab.contract import VAL_SPLIT
from ferlab.errors import FerlabError
from ferlab.inference.detect import Detection
from ferlab.inference.predict import EmotionRecognizer
from ferlab.serve import drift
from ferlab.serve.face_log import FaceLog

WINDOW = 300  # faces a window


@pytest.fixture(scope="module", autouse=True)
def evidently():
    try:
        drift.import_evidently()
    except FerlabError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def fast():
    return EmotionRecognizer.load("pretrained:fast")


@pytest.fixture(scope="module")
def publictest(archive):
    """300 PublicTest faces: FER2013 the model was not tested on, as production faces that have not drifted."""
    from ferlab.data.readers import read_image_archive
    from ferlab.data.table import images_of

    table = read_image_archive(archive).table
    faces = images_of(table[table["split"] == VAL_SPLIT])
    return faces[np.random.default_rng(0).choice(len(faces), WINDOW, replace=False)]


def write_log(path, recognizer, faces, version="pretrained:fast", per_image=3):
    """The log the service writes: observe() per image, here `per_image` faces a photo."""
    log = FaceLog(path)
    for start in range(0, len(faces), per_image):
        crops = faces[start : start + per_image]
        detections = [Detection((40 * i, 30, 120, 120), 0.9) for i in range(len(crops))]
        log.observe(recognizer, detections, crops, recognizer.classify(crops), version)
    log.close()
    return path


@pytest.fixture(scope="module")
def logs(tmp_path_factory, fast, publictest):
    folder = tmp_path_factory.mktemp("logs")
    blurred = np.stack([cv2.GaussianBlur(face, (0, 0), 1.5) for face in publictest])
    return {
        "clean": write_log(folder / "clean.jsonl", fast, publictest),
        "dark": write_log(folder / "dark.jsonl", fast, (publictest * 0.4).astype(np.uint8)),
        "blurred": write_log(folder / "blurred.jsonl", fast, blurred),
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def monitor(capsys, log, archive, cache, out, *more) -> tuple[int, dict | None, str]:
    args = ["monitor", log, "--model", "pretrained:fast", "--reference", archive, "--cache", cache, "--out", out, "--json", *more]
    if capsys is None:
        with contextlib.redirect_stdout(io.StringIO()) as stdout, contextlib.redirect_stderr(io.StringIO()) as stderr:
            code = cli.main([str(a) for a in args])
        stdout, stderr = stdout.getvalue(), stderr.getvalue()
    else:
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as usage:  # argparse refused an option
            code = usage.code
        stdout, stderr = capsys.readouterr()
    return code, (json.loads(stdout) if stdout.strip() else None), stderr


@pytest.fixture(scope="module")
def first_run(logs, archive, cache, tmp_path_factory):
    """The clean window, monitored first: it builds the reference that the other tests read from the cache."""
    out = tmp_path_factory.mktemp("report")
    return (*monitor(None, logs["clean"], archive, cache, out), out)


def test_clean_faces_do_not_drift(first_run):
    code, result, err, out = first_run
    assert code == 0, err
    assert "summarising the reference: 3589 PrivateTest faces through pretrained:fast" in err
    assert result["drift"] is False and result["share"] < drift.DEFAULT_THRESHOLD
    assert result["faces"] == {"window": WINDOW, "reference": 3589}
    assert result["tested"] == list(drift.FEATURES)
    assert result["features"]["embedding"]["score"] < drift.EMBEDDING_AUC  # the classifier cannot tell them from PrivateTest
    for name in ("brightness", "sharpness", "top_probability"):
        assert result["features"][name]["method"] == "Wasserstein distance (normed)"
    assert result["window"]["models"] == ["pretrained:fast"] and result["reference"]["model"] == "pretrained:fast"
    for name in ("emotion", "top_probability", "brightness", "sharpness", "embedding"):  # Evidently's, or chance's if higher
        f = result["features"][name]
        assert f["threshold"] == pytest.approx(max(f["evidently_threshold"], f["noise"]), abs=1e-4)
    assert result["informational"]["face_size"]["window"]["median"] == 120
    report = json.loads((out / "drift.json").read_text())
    assert report["features"] == result["features"]
    page = (out / "drift.html").read_text()
    assert page.count("<tr") >= 6 + 7 and "no drift: " in page and 'href="columns.html"' in page
    assert (out / "columns.html").stat().st_size > 100_000  # Evidently's report, its scripts inlined


def test_darkened_faces_drift(capsys, first_run, logs, archive, cache, tmp_path):
    code, result, err = monitor(capsys, logs["dark"], archive, cache, tmp_path / "report")
    assert code == 3, err
    assert result["drift"] is True and result["share"] >= drift.DEFAULT_THRESHOLD
    assert {"brightness", "sharpness", "embedding"} <= set(result["drifted"])
    assert result["features"]["brightness"]["window"]["mean"] < 0.5 * result["features"]["brightness"]["reference"]["mean"]
    assert "summarising the reference" not in err  # the first run built it; this one read it from the cache


def test_blurred_faces_drift(capsys, first_run, logs, archive, cache, tmp_path):
    code, result, err = monitor(capsys, logs["blurred"], archive, cache, tmp_path / "report")
    assert code == 3, err
    assert {"sharpness", "embedding", "top_probability"} <= set(result["drifted"])
    assert "brightness" not in result["drifted"]  # blur keeps the light


def test_samples_of_the_reference_itself_do_not_drift(first_run, cache):
    """Without the thresholds raised to chance, most 60-face samples of PrivateTest drift in brightness and sharpness."""
    from ferlab.serve.face_log import read_window

    (path,) = (cache / "drift-reference").glob("*.jsonl")
    rows = read_window(path).rows
    pick = np.random.default_rng(1).permutation(len(rows))
    for size in (60, 300):
        result, _ = drift.compare([rows[i] for i in pick[:size]], rows)
        assert result["drift"] is False and result["share"] <= 1 / 6, (size, result["drifted"])


def test_a_face_log_can_be_the_reference(capsys, first_run, logs, cache, tmp_path):
    """Production as it was (a window of the log) as the baseline: the same faces do not drift from it, clean ones do."""
    baseline = tmp_path / "week1.jsonl"
    baseline.write_text(logs["dark"].read_text())
    code, result, err = monitor(capsys, logs["dark"], baseline, cache, tmp_path / "r")
    assert code == 0, err
    assert result["reference"]["description"] == f"{baseline} ({WINDOW} faces)" and result["drifted"] == []
    # a reference under 1,000 faces: Evidently tests p-values (Kolmogorov-Smirnov, chi-squared), which need no noise floor
    assert result["features"]["brightness"]["method"].startswith("K-S") and result["features"]["brightness"]["noise"] is None
    code, result, err = monitor(capsys, logs["clean"], baseline, cache, tmp_path / "r")
    assert code == 3 and {"brightness", "sharpness"} <= set(result["drifted"]), err


def test_the_threshold_decides_the_exit_status(capsys, first_run, logs, archive, cache, tmp_path):
    code, result, _ = monitor(capsys, logs["dark"], archive, cache, tmp_path / "r", "--threshold", "1")
    assert code == (3 if result["share"] == 1 else 0) and result["threshold"] == 1
    code, _, err = monitor(capsys, logs["dark"], archive, cache, tmp_path / "r", "--threshold", "0")
    assert code == 2 and "must be a share above 0 and at most 1" in err


def test_the_report_goes_to_mlflow(capsys, first_run, logs, archive, cache, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code, result, err = monitor(capsys, logs["dark"], archive, cache, tmp_path / "report", "--log")
    assert code == 3, err
    client = MlflowClient(uri)
    run = client.get_run(result["mlflow_run_id"])
    assert client.get_experiment(run.info.experiment_id).name == drift.EXPERIMENT
    assert run.data.metrics["drift"] == 1 and run.data.metrics["drift_share"] == result["share"]
    assert run.data.metrics["score_brightness"] == result["features"]["brightness"]["score"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "drift")}
    assert artifacts == {"drift/drift.json", "drift/drift.html", "drift/columns.html"}


def test_windows_by_time_and_model_version(capsys, first_run, fast, publictest, archive, cache, tmp_path):
    log = FaceLog(tmp_path / "faces.jsonl")
    old = datetime.now(timezone.utc) - timedelta(days=3)
    from ferlab.inference.face_summary import summarize

    crops = publictest[:70]
    log.write(summarize([(0, 0, 48, 48)] * 70, crops, fast.classify(crops), "v1", when=old))
    write_log(tmp_path / "faces.jsonl", fast, publictest[:60], version="v2")
    code, result, err = monitor(capsys, tmp_path / "faces.jsonl", archive, cache, tmp_path / "r", "--since", "1d")
    assert code == 0, err
    assert result["faces"]["window"] == 60 and result["window"]["models"] == ["v2"]
    code, _, err = monitor(capsys, tmp_path / "faces.jsonl", archive, cache, tmp_path / "r")
    assert code == 1 and "error: the window holds faces of 2 model versions (v1: 70 faces, v2: 60 faces); pick one with" in err
    code, result, err = monitor(capsys, tmp_path / "faces.jsonl", archive, cache, tmp_path / "r", "--model-version", "v1")
    assert code == 0 and result["faces"]["window"] == 70 and "since" not in result["window"]["description"]


def test_what_a_user_can_get_wrong_is_one_sentence(capsys, first_run, logs, archive, cache, tmp_path):
    code, _, err = monitor(capsys, tmp_path / "none.jsonl", archive, cache, tmp_path / "r")
    missing = tmp_path / "none.jsonl"
    assert code == 1 and err.strip().splitlines() == [
        f"error: no face log at {missing}; start the service with --face-log {missing} and send it images first."
    ]
    code, _, err = monitor(capsys, logs["clean"], archive, cache, tmp_path / "r", "--since", "2099-01-01")
    assert code == 1 and f"error: the window holds no face: {logs['clean']} has {WINDOW} lines, none in it" in err
    code, _, err = monitor(capsys, logs["clean"], archive, cache, tmp_path / "r", "--last", "5")
    assert code == 1 and f"error: the window holds 5 faces; a drift test needs at least {drift.MIN_FACES}" in err
    code, _, err = monitor(capsys, logs["clean"], archive, cache, tmp_path / "r", "--since", "yesterday")
    assert code == 2 and "'yesterday' is neither an ISO 8601 time" in err
    code, _, err = monitor(capsys, logs["clean"], tmp_path / "nothing.zip", tmp_path / "empty-cache", tmp_path / "r")
    assert code == 1 and f"error: no FER2013 at {tmp_path / 'nothing.zip'}" in err


def test_corrupt_lines_are_counted_skipped_and_said(capsys, first_run, logs, archive, cache, tmp_path):
    log = tmp_path / "faces.jsonl"
    log.write_text(logs["clean"].read_text() + '{"time": "2026-12-07T09:00:00+00:00", "probab\nnot json\n')
    code, result, err = monitor(capsys, log, archive, cache, tmp_path / "r")
    assert code == 0 and result["window"]["corrupt_lines"] == 2 and result["faces"]["window"] == WINDOW
    assert f"warning: 2 of {WINDOW + 2} lines of {log} are not face summaries (the first at {log}:{WINDOW + 1}); skipped." in err
