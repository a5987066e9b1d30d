import json
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.inference import assess, labelled_set
from ferlab.inference.detect import Detection


def image(path: Path, grey: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((48, 48), grey, np.uint8))
    return path


# ---- reading a labelled set -----------------------------------------------------------------


def test_folder_labels_match_synonyms_and_skip_what_is_not_fer2013(tmp_path):
    for folder, n in (("Happiness", 2), ("ANGER", 1), ("surprised", 1), ("fearful", 1), ("Contempt", 2), ("misc", 1)):
        for i in range(n):
            image(tmp_path / folder / f"{i}.png")
    image(tmp_path / "Happiness" / "deeper" / "x.jpg")
    image(tmp_path / "loose.png")
    (tmp_path / "Happiness" / "notes.txt").write_text("not an image")
    found = labelled_set.read(str(tmp_path))
    labels = sorted(label for _, label in found.items)
    assert labels == ["angry", "fear", "happy", "happy", "happy", "surprise"]
    assert found.skipped == {"Contempt": 2, "misc": 1}
    assert len(found.problems) == 1 and "1 image(s) directly in" in found.problems[0]


def test_csv_paths_are_relative_to_the_csv_and_columns_are_checked(tmp_path):
    image(tmp_path / "imgs" / "a.png")
    table = tmp_path / "labels.csv"
    table.write_text("Path,Label\nimgs/a.png,Sadness\nimgs/b.png,contempt\n,happy\nimgs/c.png,disgusted\n")
    found = labelled_set.read(str(table))
    assert found.items == [(str(tmp_path / "imgs" / "a.png"), "sad"), (str(tmp_path / "imgs" / "c.png"), "disgust")]
    assert found.skipped == {"contempt": 1} and "line 4 has no path or no label" in found.problems[0]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,emotion\na.png,happy\n")
    with pytest.raises(FerlabError, match="needs the columns path and label; it has file, emotion"):
        labelled_set.read(str(bad))


def test_wrong_layouts_get_one_sentence(tmp_path):
    with pytest.raises(FerlabError, match="no such folder or CSV file"):
        labelled_set.read(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FerlabError, match="holds no emotion subfolders"):
        labelled_set.read(str(tmp_path / "empty"))
    (tmp_path / "list.txt").write_text("x")
    with pytest.raises(FerlabError, match="neither a folder"):
        labelled_set.read(str(tmp_path / "list.txt"))


# ---- scoring --------------------------------------------------------------------------------


class FakeRecognizer:
    """Faces by file name: none_* has no face, two_* two faces; the grey level picks the class."""

    detector_name, tta = "fake", "none"

    def crops(self, path, face_crop=False):
        name = Path(path).name
        if name.startswith("broken"):
            raise FerlabError(f"{path} is not a readable image.")
        grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        n = 0 if name.startswith("none") else 2 if name.startswith("two") else 1
        boxes = [Detection((0, 0, 10 + i, 10 + i)) for i in range(n)]
        return boxes, np.stack([grey] * n) if n else np.zeros((0, 48, 48), np.uint8)

    def classify(self, faces):
        probs = np.full((len(faces), 7), 0.01)
        for row, face in zip(probs, faces):
            row[int(face.mean()) // 30] = 0.94
        return probs


def labelled(tmp_path) -> labelled_set.LabelledSet:
    items = [
        (image(tmp_path / "h1.png", 3 * 30), "happy"),
        (image(tmp_path / "h2.png", 3 * 30), "happy"),
        (image(tmp_path / "h3.png", 0), "happy"),
        (image(tmp_path / "s1.png", 4 * 30), "sad"),
        (image(tmp_path / "none_1.png"), "sad"),
        (image(tmp_path / "two_1.png", 4 * 30), "sad"),
        (tmp_path / "broken.png", "angry"),
    ]
    return labelled_set.LabelledSet(str(tmp_path), [(str(p), label) for p, label in items])


def test_every_image_is_scored_or_counted_and_absent_classes_leave_the_macro(tmp_path):
    data = labelled(tmp_path)
    outcomes = assess.score(FakeRecognizer(), data, progress=False)
    assert [o.status for o in outcomes] == ["scored"] * 4 + ["no_face", "several_faces", "unreadable"]
    assert [o.predicted for o in outcomes[:4]] == ["happy", "happy", "angry", "sad"]
    summary = assess.summarise(outcomes, data, {"detector": "fake"})
    assert summary["scored"] == 4 and summary["images"] == 7
    assert summary["not_scored"] == {"no_face": 1, "several_faces": 1, "unreadable": 1}
    assert summary["accuracy"] == 0.75
    assert summary["classes_in_macro"] == ["happy", "sad"] and "angry" in summary["absent_classes"]
    # happy: P 1, R 2/3 -> F1 0.8; sad: P 1, R 1 -> F1 1; angry (predicted once, never true) is left out
    assert summary["macro_f1"] == 0.9
    assert summary["per_class"]["angry"] is None and summary["per_class"]["happy"]["recall"] == pytest.approx(0.6667)
    assert np.array(summary["confusion_matrix"]).sum() == 4

    largest = assess.score(FakeRecognizer(), data, largest_face=True, progress=False)
    assert largest[5].status == "scored" and largest[5].predicted == "sad"


def test_report_files(tmp_path):
    data = labelled(tmp_path / "set")
    outcomes = assess.score(FakeRecognizer(), data, progress=False)
    summary = assess.summarise(outcomes, data, {})
    files = assess.write_report(summary, outcomes, tmp_path / "out")
    assert set(files) == {"summary.json", "predictions.csv", "confusion_matrix.json", "confusion_matrix.png", "mistakes.png"}
    assert json.loads(files["summary.json"].read_text())["accuracy"] == 0.75
    rows = files["predictions.csv"].read_text().splitlines()
    assert len(rows) == 8 and rows[3].split(",")[2:4] == ["scored", "angry"]
    assert json.loads(files["confusion_matrix.json"].read_text())["labels"] == list(EMOTIONS)


def test_nothing_scorable_is_one_sentence(tmp_path):
    data = labelled_set.LabelledSet(str(tmp_path), [(str(image(tmp_path / "none_a.png")), "happy")])
    with pytest.raises(FerlabError, match=r"no image of .* could be scored \(1 no_face"):
        assess.summarise(assess.score(FakeRecognizer(), data, progress=False), data, {})


def test_log_run_records_the_set_and_tags_the_registered_version(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    client.create_registered_model("emo")
    version = str(client.create_model_version("emo", source="file:///nowhere").version)
    client.set_registered_model_alias("emo", "production", version)

    data = labelled(tmp_path / "my_faces")
    outcomes = assess.score(FakeRecognizer(), data, progress=False)
    summary = assess.summarise(outcomes, data, {"tta": "none"})
    files = assess.write_report(summary, outcomes, tmp_path / "out")
    run_id = assess.log_run(summary, files, data, "models:/emo@production")

    run = client.get_run(run_id)
    assert run.data.metrics["accuracy"] == 0.75 and run.data.metrics["not_scored_no_face"] == 1
    assert run.data.tags["ferlab.registered_version"] == version and run.data.tags["ferlab.dataset"] == "my_faces"
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "my_faces" and dataset.tags[0].value == "evaluation"
    assert client.get_experiment(run.info.experiment_id).name == assess.EXPERIMENT
    assert {a.path for a in client.list_artifacts(run_id, "evaluation")} >= {"evaluation/summary.json", "evaluation/mistakes.png"}
    tag = client.get_model_version("emo", version).tags["eval.my_faces"]
    assert tag.startswith("accuracy 0.7500, macro-F1 0.9000 on 4 faces") and run_id in tag
