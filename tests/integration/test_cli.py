"""The `ferlab` command end to end: real FER2013 faces, real files (bad ones too), a tiny trained model."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import face_scene

from ferlab import cli, contract
from ferlab.contract import EMOTIONS

# ---- fixtures -------------------------------------------------------------------------------


def place(frame: np.ndarray, face: np.ndarray, x: int, y: int, side: int) -> None:
    """Paste a FER2013 face, enlarged to side x side, into a grey frame."""
    frame[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="session")
def detectable(fer_faces):
    """Real faces the Haar detector finds once enlarged, alone and side by side."""
    from ferlab.inference.detect import get_detector

    haar = get_detector("haar")
    picked = [face for face in fer_faces[0][:10] if len(haar.detect(cv2.cvtColor(face_scene(face), cv2.COLOR_GRAY2BGR))) == 1]
    assert len(picked) >= 3
    return picked


@pytest.fixture
def photos(tmp_path, detectable, fer_faces) -> Path:
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for i, face in enumerate(detectable[:3]):
        cv2.imwrite(str(folder / ("more" if i == 2 else "") / f"face{i}.jpg"), face_scene(face))
    cv2.imwrite(str(folder / "wall.png"), np.full((300, 400), 120, np.uint8))  # no face
    good = cv2.imencode(".png", face_scene(detectable[0]))[1].tobytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    (folder / "notes.jpg").write_text("not an image\n")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "readme.txt").write_text("ignored: not an image suffix\n")
    return folder


def ferlab(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in this process. The scenes hold faces that Haar finds (see `detectable`),
    so detect/video/webcam run on Haar unless a test names a detector; the default detector
    is tested on real photos below and in tests/unit/test_runtimes.py."""
    args = [str(a) for a in args]
    if args and args[0] in ("detect", "explain", "video", "webcam") and "--detector" not in args:
        args += ["--detector", "haar"]
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


# ---- help and the real process --------------------------------------------------------------


def test_help_reads_well_and_starts_without_tensorflow():
    for command, expected in [
        ([], ["detect", "explain", "video", "webcam", "evaluate"]),
        (["evaluate"], ["--face-crop", "--largest-face", "--log", "--out", "--model"]),
        (["detect"], ["--json", "--csv", "--annotate", "--face-crop", "--detector", "--max-pixels"]),
        (["explain"], ["--out", "--method", "occlusion", "gradcam", "--json", "--face-crop", "--runtime"]),
        (["video"], ["--stride", "--out"]),
        (["webcam"], ["--camera", "--source", "--no-window", "--output"]),
    ]:
        result = subprocess.run([sys.executable, "-m", "ferlab.cli", *command, "--help"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        for option in expected:
            assert option in result.stdout
    probe = "import sys; from ferlab import cli; cli.build_parser(); print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


def test_missing_model_is_one_clear_line(tmp_path, photos):
    result = subprocess.run(
        [sys.executable, "-m", "ferlab.cli", "detect", photos / "face0.jpg", "--model", tmp_path / "models" / "model.h5"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: no model at ")
    assert "pass --model pretrained:fast (shipped with ferlab)" in result.stderr and "`dvc repro` trains one" in result.stderr


# ---- detect ---------------------------------------------------------------------------------


def test_detect_a_photo_with_the_default_detector_and_a_bundle(capsys, tmp_path, tiny_model_path):
    """What `ferlab detect photo.jpg` does after `dvc repro`: BlazeFace, and the bundle's TFLite model."""
    from ferlab.lifecycle.export import to_tflite
    from ferlab.training.model_io import load_h5

    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image for its astronaut photo")
    bundle = tmp_path / "models" / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "model.h5").write_bytes(tiny_model_path.read_bytes())
    to_tflite(load_h5(tiny_model_path), bundle / "model.tflite")
    cv2.imwrite(str(tmp_path / "astronaut.jpg"), cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    result = subprocess.run(
        [sys.executable, "-m", "ferlab.cli", "detect", "astronaut.jpg", "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    ((photo,),) = [json.loads(result.stdout)]
    (face,) = photo["faces"]
    assert 0.5 < face["confidence"] <= 1  # blazeface gives one; haar would not
    assert 150 < face["box"]["x"] + face["box"]["w"] / 2 < 300 and 50 < face["box"]["y"] + face["box"]["h"] / 2 < 200
    assert "XNNPACK" not in result.stderr  # LiteRT's banner stays out of the output


def test_detect_folder_reports_bad_files_and_processes_the_rest(capsys, photos, tiny_model_path):
    code, out, err = ferlab(capsys, "detect", photos, "--json", "--model", tiny_model_path)
    assert code == 1
    results = {Path(r["path"]).name: r for r in json.loads(out)}
    assert sorted(results) == ["empty.jpg", "face0.jpg", "face1.jpg", "face2.jpg", "notes.jpg", "truncated.png", "wall.png"]
    for name in ("face0.jpg", "face1.jpg", "face2.jpg"):
        (face,) = results[name]["faces"]
        assert 160 * 0.7 < face["box"]["w"] < 160 * 1.4
        assert face["emotion"] in EMOTIONS and sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert results["wall.png"]["faces"] == []
    assert "empty (0 bytes)" in results["empty.jpg"]["error"]
    for name in ("notes.jpg", "truncated.png"):
        assert "is not a readable image" in results[name]["error"]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4 and errors[-1] == "error: 3 of 7 inputs failed; the others were processed."
    assert "Traceback" not in err


def test_detect_table_csv_and_globs(capsys, photos, tiny_model_path):
    code, out, err = ferlab(capsys, "detect", photos / "face*.jpg", photos / "wall.png", "--model", tiny_model_path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["file", "face", "x", "y", "w", "h", "emotion", "prob", "confidence"]
    assert [Path(line.split()[0]).name for line in lines[1:]] == ["face0.jpg", "face1.jpg", "wall.png"]
    assert lines[-1].split()[1:] == ["-", "no", "face"]

    code, out, err = ferlab(capsys, "detect", photos / "**" / "*.jpg", "--csv", "--model", tiny_model_path)
    assert code == 1  # the glob takes empty.jpg and notes.jpg too
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sorted(Path(r["path"]).name for r in rows) == ["face0.jpg", "face1.jpg", "face2.jpg"]
    assert list(rows[0]) == ["path", "face", "x", "y", "w", "h", "confidence", "emotion", *EMOTIONS, "model"]
    assert {r["model"] for r in rows} == {str(tiny_model_path)}
    assert all(r["emotion"] == max(EMOTIONS, key=lambda e: float(r[e])) for r in rows)

    code, out, err = ferlab(capsys, "detect", photos / "*.gif", "--model", tiny_model_path)
    assert code == 1 and "matches no file" in err


def test_detect_annotates_copies(capsys, photos, tiny_model_path, tmp_path):
    out_dir = tmp_path / "annotated"
    code, out, err = ferlab(
        capsys,
        "detect",
        photos / "face0.jpg",
        photos / "more" / "face2.jpg",
        photos / "wall.png",
        "--annotate",
        out_dir,
        "--json",
        "--model",
        tiny_model_path,
    )
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["face0.jpg", "face2.jpg", "wall.png"]
    original, annotated = cv2.imread(str(photos / "face0.jpg")), cv2.imread(str(out_dir / "face0.jpg"))
    assert annotated.shape == original.shape
    box = json.loads(out)[0]["faces"][0]["box"]
    changed = np.abs(annotated.astype(int) - original).sum(axis=2) > 60
    assert changed[box["y"], box["x"] : box["x"] + box["w"]].mean() > 0.8  # the box's top edge is drawn
    assert np.array_equal(cv2.imread(str(out_dir / "wall.png")), cv2.imread(str(photos / "wall.png")))


def test_detect_face_crops(capsys, fer_faces, tiny_model_path, tmp_path):
    for i, face in enumerate(fer_faces[0][:3]):
        cv2.imwrite(str(tmp_path / f"fer{i}.png"), face)
    code, out, err = ferlab(capsys, "detect", tmp_path, "--face-crop", "--json", "--model", tiny_model_path)
    assert code == 0, err
    results = json.loads(out)
    assert len(results) == 3 and all(r["faces"][0]["box"] == {"x": 0, "y": 0, "w": 48, "h": 48} for r in results)


def test_detect_faces_that_fill_the_image_unless_told_not_to(capsys, fer_faces, tiny_model_path, tmp_path):
    """BlazeFace misses most faces cut out tight; the second look finds them, --no-filling-faces skips it."""
    for i, face in enumerate(fer_faces[0][:12]):
        cv2.imwrite(str(tmp_path / f"portrait{i}.png"), cv2.resize(face, (256, 256), interpolation=cv2.INTER_CUBIC))
    found = {}
    for switch in ("--filling-faces", "--no-filling-faces"):
        code, out, err = ferlab(capsys, "detect", tmp_path, "--json", "--detector", "blazeface", switch, "--model", tiny_model_path)
        assert code == 0, err
        found[switch] = sum(len(r["faces"]) for r in json.loads(out))
    assert found["--filling-faces"] >= 5 and found["--filling-faces"] >= found["--no-filling-faces"] + 4


def test_detect_pixel_limit(capsys, photos, tiny_model_path):
    code, out, err = ferlab(capsys, "detect", photos / "face0.jpg", "--max-pixels", 1000, "--model", tiny_model_path)
    assert code == 1 and "face0.jpg has 640x480 = 307,200 pixels, above the limit of 1,000" in err


def test_detect_from_the_model_registry(capsys, photos, tiny_model_path, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.h5").write_bytes(tiny_model_path.read_bytes())
    (bundle / "preprocessing.json").write_text(json.dumps(contract.preprocessing()))
    (bundle / "labels.json").write_text(json.dumps({"emotions": [{"id": i, "name": e} for i, e in enumerate(EMOTIONS)]}))
    experiment = mlflow.create_experiment("cli-test", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(bundle), "bundle")
    client = MlflowClient(uri)
    client.create_registered_model("ferlab")
    version = client.create_model_version("ferlab", f"runs:/{run.info.run_id}/bundle", run_id=run.info.run_id)
    client.set_registered_model_alias("ferlab", "production", version.version)

    code, out, err = ferlab(capsys, "detect", photos / "face0.jpg", "--json", "--model", "models:/ferlab@production")
    assert code == 0, err
    assert len(json.loads(out)[0]["faces"]) == 1
    code, out, err = ferlab(capsys, "detect", photos / "face0.jpg", "--model", "models:/ferlab@staging")
    assert code == 1 and "error: no version of 'ferlab' has the alias 'staging'" in err
    code, out, err = ferlab(capsys, "models", "list", "--name", "ferlab")  # the registry commands share the CLI
    assert code == 0 and out.splitlines()[1].split()[:2] == ["1", "-"] and "production" in out


# ---- evaluate -------------------------------------------------------------------------------


def test_evaluate_a_labelled_folder_counts_what_it_cannot_score(capsys, tmp_path, detectable, tiny_model_path):
    data = tmp_path / "my_faces"
    for folder in ("Happiness", "SAD", "contempt"):
        (data / folder).mkdir(parents=True)
    cv2.imwrite(str(data / "Happiness" / "a.jpg"), face_scene(detectable[0]))
    cv2.imwrite(str(data / "Happiness" / "b.jpg"), face_scene(detectable[1]))
    cv2.imwrite(str(data / "SAD" / "c.jpg"), face_scene(detectable[2]))
    cv2.imwrite(str(data / "SAD" / "wall.png"), np.full((300, 400), 120, np.uint8))
    two = face_scene(detectable[0])
    place(two, detectable[1], 420, 120, 160)
    cv2.imwrite(str(data / "SAD" / "two.png"), two)
    (data / "SAD" / "notes.jpg").write_text("not an image\n")
    cv2.imwrite(str(data / "contempt" / "d.jpg"), face_scene(detectable[0]))
    out = tmp_path / "report"
    code, stdout, err = ferlab(capsys, "evaluate", data, "--out", out, "--detector", "haar", "--model", tiny_model_path)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 6 and summary["scored"] == 3
    assert summary["not_scored"] == {"no_face": 1, "several_faces": 1, "unreadable": 1}
    assert summary["skipped_labels"] == {"contempt": 1} and summary["classes_in_macro"] == ["happy", "sad"]
    assert "3 of 6 images scored" in stdout and "not in the set (left out of the macro averages): angry" in stdout
    assert "skipped labels outside FER2013's seven: contempt (1)" in stdout
    assert err.count("error: ") == 1 and "notes.jpg is not a readable image" in err and "Traceback" not in err
    with open(out / "predictions.csv") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert rows["two.png"]["status"] == "several_faces" and rows["wall.png"]["status"] == "no_face"
    assert rows["a.jpg"]["predicted"] in EMOTIONS
    for name in ("confusion_matrix.png", "confusion_matrix.json"):
        assert (out / name).stat().st_size > 0

    code, stdout, _ = ferlab(
        capsys, "evaluate", data, "--out", out, "--detector", "haar", "--model", tiny_model_path, "--largest-face", "--json"
    )
    assert code == 0 and json.loads(stdout)["scored"] == 4


def test_evaluate_face_crops_from_a_csv(capsys, tmp_path, fer_faces, tiny_model_path):
    faces, labels = fer_faces
    (tmp_path / "crops").mkdir()
    lines = ["path,label"]
    for i in range(0, 60, 3):
        cv2.imwrite(str(tmp_path / "crops" / f"{i}.png"), faces[i])
        lines.append(f"crops/{i}.png,{EMOTIONS[labels[i]]}")
    (tmp_path / "faces.csv").write_text("\n".join(lines) + "\n")
    code, stdout, err = ferlab(
        capsys, "evaluate", tmp_path / "faces.csv", "--face-crop", "--json", "--out", tmp_path / "out", "--model", tiny_model_path
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["scored"] == 20 and summary["setup"]["detector"] == "none (face crops)"
    assert sum(sum(row) for row in summary["confusion_matrix"]) == 20


def test_evaluate_wrong_layout_is_one_line(capsys, tmp_path):
    (tmp_path / "bad.csv").write_text("file,emotion\nx.png,happy\n")
    code, _, err = ferlab(capsys, "evaluate", tmp_path / "bad.csv")
    assert code == 1 and err.strip() == f"error: {tmp_path / 'bad.csv'} needs the columns path and label; it has file, emotion."


# ---- explain --------------------------------------------------------------------------------


def test_explain_writes_a_heat_map_per_face_and_prints_json(capsys, photos, tiny_model_path, tmp_path):
    out_dir = tmp_path / "why"
    code, out, err = ferlab(
        capsys,
        "explain",
        photos / "face0.jpg",
        photos / "more" / "face2.jpg",
        photos / "wall.png",
        photos / "notes.jpg",
        "--out",
        out_dir,
        "--json",
        "--model",
        tiny_model_path,
    )
    assert code == 1  # notes.jpg is not an image; the others are explained
    assert "notes.jpg is not a readable image" in err and "1 of 4 inputs failed" in err
    results = {Path(r["path"]).name: r for r in json.loads(out)}
    assert results["wall.png"]["faces"] == [] and "error" in results["notes.jpg"]
    # a .h5 runs on Keras (TensorFlow), so auto is Grad-CAM
    assert sorted(p.name for p in out_dir.iterdir()) == ["face0.face0.gradcam.png", "face2.face0.gradcam.png"]
    for name in ("face0.jpg", "face2.jpg"):
        (face,) = results[name]["faces"]
        assert list(face) == ["box", "confidence", "emotion", "probabilities", "method", "heatmap"]
        assert face["method"] == "gradcam" and face["emotion"] == max(face["probabilities"], key=face["probabilities"].get)
        picture = cv2.imread(face["heatmap"])
        assert picture is not None and picture.shape[0] == picture.shape[1] >= 192
        # the face as the photo shows it, tinted by the heat map: the same region, recognisably
        photo = cv2.imread(str(photos / "more" / name if name == "face2.jpg" else photos / name))
        box = face["box"]
        region = cv2.resize(photo[box["y"] : box["y"] + box["h"], box["x"] : box["x"] + box["w"]], picture.shape[:2])
        grey = [cv2.cvtColor(i, cv2.COLOR_BGR2GRAY).astype(float).ravel() for i in (region, picture)]
        assert np.corrcoef(*grey)[0, 1] > 0.5
    detected = json.loads(ferlab(capsys, "detect", photos / "face0.jpg", "--json", "--model", tiny_model_path)[1])
    explained = results["face0.jpg"]["faces"][0]
    assert explained["box"] == detected[0]["faces"][0]["box"]
    assert explained["probabilities"] == pytest.approx(detected[0]["faces"][0]["probabilities"], abs=1e-4)


def test_explain_prints_a_line_per_face_and_takes_face_crops(capsys, fer_faces, tiny_model_path, tmp_path):
    for i, face in enumerate(fer_faces[0][:2]):
        cv2.imwrite(str(tmp_path / f"fer{i}.png"), face)
    (tmp_path / "other").mkdir()
    cv2.imwrite(str(tmp_path / "other" / "fer0.png"), fer_faces[0][2])  # the same name from another folder
    out_dir = tmp_path / "why"
    code, out, err = ferlab(
        capsys,
        "explain",
        tmp_path / "fer0.png",
        tmp_path / "fer1.png",
        tmp_path / "other" / "fer0.png",
        "--face-crop",
        "--method",
        "occlusion",
        "--out",
        out_dir,
        "--model",
        tiny_model_path,
    )
    assert code == 0, err
    header, *rows = [line.split() for line in out.splitlines()]
    assert header == ["file", "face", "x", "y", "w", "h", "emotion", "prob", "method", "heatmap"]
    assert [row[1:6] for row in rows] == [["0", "0", "0", "48", "48"]] * 3
    assert all(row[6] in EMOTIONS and 0 < float(row[7]) <= 1 and row[8] == "occlusion" for row in rows)
    written = [Path(row[9]) for row in rows]
    assert [p.name for p in written] == ["fer0.face0.occlusion.png", "fer1.face0.occlusion.png", "fer0_2.face0.occlusion.png"]
    assert all(cv2.imread(str(p)).shape == (192, 192, 3) for p in written)  # 48x48 crops, enlarged


def test_explain_says_when_gradcam_cannot_run(capsys, photos, tiny_bundle, tmp_path):
    code, out, err = ferlab(
        capsys, "explain", photos / "face0.jpg", "--method", "gradcam", "--out", tmp_path / "why", "--model", tiny_bundle
    )
    assert code == 1 and "Traceback" not in err
    assert err.strip() == (
        "error: Grad-CAM needs the gradients of a Keras model, which the tflite runtime does not give; "
        "use --runtime keras with a .h5 file or a bundle, or --method occlusion."
    )
    code, out, err = ferlab(capsys, "explain", photos / "face0.jpg", "--out", tmp_path / "why", "--model", tiny_bundle, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["faces"][0]["method"] == "occlusion"  # auto, on LiteRT


# ---- video and webcam -----------------------------------------------------------------------


@pytest.fixture
def clip(tmp_path, detectable) -> Path:
    """16 frames at 8 FPS: one face walks right on the left half, another stays on the right half."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 8.0, (640, 480))
    assert writer.isOpened()
    for i in range(16):
        frame = np.full((480, 640), 110, np.uint8)
        place(frame, detectable[0], 20 + 6 * i, 140, 150)
        place(frame, detectable[1], 440, 160, 150)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def frame_count(path: Path) -> tuple[int, tuple[int, int]]:
    capture = cv2.VideoCapture(str(path))
    n, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        n, size = n + 1, frame.shape[:2]
    capture.release()
    return n, size


def test_video_writes_csv_video_timeline_and_summary(capsys, clip, tiny_model_path, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = ferlab(capsys, "video", clip, "--stride", 2, "--out", out_dir, "--model", tiny_model_path)
    assert code == 0, err
    rows = list(csv.DictReader(open(out_dir / "clip.csv")))
    assert sorted({int(r["frame"]) for r in rows}) == list(range(0, 16, 2))
    assert {float(r["time_s"]) for r in rows} == {f / 8 for f in range(0, 16, 2)}
    sides = {}
    for r in rows:  # each face keeps its index: the walker on the left, the other on the right
        sides.setdefault(r["face"], set()).add(int(r["x"]) < 320)
    assert len(sides) == 2 and all(len(s) == 1 for s in sides.values())
    assert len(rows) >= 14  # both faces in (nearly) every analysed frame
    assert frame_count(out_dir / "clip.annotated.mp4") == (8, (480, 640))
    assert cv2.imread(str(out_dir / "clip.timeline.png")) is not None
    summary = json.loads((out_dir / "clip.summary.json").read_text())
    mean = {e: np.mean([float(r[e]) for r in rows]) for e in EMOTIONS}
    assert summary["dominant_emotion"] == max(mean, key=mean.get)
    assert summary["frames"] == 16 and summary["analysed_frames"] == 8 and summary["faces_tracked"] == 2
    assert f"dominant emotion {summary['dominant_emotion']}" in out


def test_video_without_faces(capsys, tmp_path, tiny_model_path):
    path = tmp_path / "empty_room.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(5):
        writer.write(np.full((240, 320, 3), 40 + 10 * i, np.uint8))
    writer.release()
    code, out, err = ferlab(capsys, "video", path, "--out", tmp_path / "out", "--model", tiny_model_path)
    assert code == 0, err
    assert "no face found in 5 analysed frames" in out
    summary = json.loads((tmp_path / "out" / "empty_room.summary.json").read_text())
    assert summary["dominant_emotion"] is None and summary["frames_with_faces"] == 0
    assert (tmp_path / "out" / "empty_room.csv").read_text().splitlines() == [
        ",".join(["frame", "time_s", "face", "x", "y", "w", "h", "confidence", "emotion", *EMOTIONS])
    ]


def test_video_that_does_not_open(capsys, tmp_path, tiny_model_path):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video\n")
    code, out, err = ferlab(capsys, "video", broken, "--out", tmp_path / "out", "--model", tiny_model_path)
    assert code == 1 and "error: cannot open " in err and "broken.mp4" in err and "Traceback" not in err
    code, out, err = ferlab(capsys, "video", tmp_path / "missing.mp4", "--model", tiny_model_path)
    assert code == 1 and "missing.mp4: no such video file" in err


def test_webcam_headless_writes_what_the_window_would_show(capsys, clip, tiny_model_path, tmp_path):
    output = tmp_path / "live.avi"
    code, out, err = ferlab(capsys, "webcam", "--source", clip, "--no-window", "--output", output, "--model", tiny_model_path)
    assert code == 0, err
    assert out.startswith("16 frames in ") and str(output) in out
    assert frame_count(output) == (16, (480, 640))
    first = cv2.VideoCapture(str(output)).read()[1]
    source = cv2.VideoCapture(str(clip)).read()[1]
    assert np.abs(first.astype(int) - source).sum(axis=2).__gt__(60).mean() > 0.01  # boxes, labels, bars, FPS drawn

    code, out, err = ferlab(
        capsys, "webcam", "--source", clip, "--no-window", "--output", output, "--max-frames", 5, "--model", tiny_model_path
    )
    assert code == 0 and frame_count(output)[0] == 5


def test_webcam_window_without_a_display_says_what_to_do(capsys, monkeypatch, clip, tiny_model_path):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, out, err = ferlab(capsys, "webcam", "--source", clip, "--model", tiny_model_path)
    assert code == 1 and "use --no-window" in err


def test_webcam_source_that_does_not_open(capsys, tmp_path, tiny_model_path):
    code, out, err = ferlab(capsys, "webcam", "--source", tmp_path / "nothing.mp4", "--no-window", "--model", tiny_model_path)
    assert code == 1 and "nothing.mp4: no such video file" in err
