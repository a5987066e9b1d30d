"""The real pipeline, through `dvc repro` and `dvc exp run`, on a stratified slice of FER2013."""

import csv
import json
import sqlite3

import numpy as np
import pytest
from mlflow import MlflowClient

from integration.conftest import run

pytestmark = pytest.mark.slow


def mlflow_runs(root):
    with sqlite3.connect(root / "mlflow.db") as db:
        return db.execute("select run_uuid, name, status from runs order by start_time").fetchall()


def test_dvc_repro_on_a_slice_produces_consistent_outputs(project):
    root, env = project
    out = run(["dvc", "repro"], root, env)
    for stage in ("fetch", "validate", "preprocess", "train", "evaluate"):
        assert f"Running stage '{stage}'" in out.stdout

    summary = json.loads((root / "data/raw/summary.json").read_text())
    assert summary["rows"] == 12 * 7 * 3 and summary["source"]["sha256_verified"]
    report = json.loads((root / "reports/validation/report.json").read_text())
    assert report["success"] and not report["exact_counts"]
    assert (root / "reports/validation/class_distribution.png").stat().st_size > 0
    assert (root / "reports/validation/data_docs/index.html").is_file()
    assert (root / "reports/preprocess/augmentation_samples.png").stat().st_size > 0

    assert (root / "models/model.h5").stat().st_size > 0
    history = list(csv.DictReader(open(root / "reports/train/history.csv")))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert "Total params" in (root / "reports/train/model_summary.txt").read_text()

    metrics = json.loads((root / "reports/metrics.json").read_text())
    scores = json.loads((root / "reports/evaluate/scores.json").read_text())
    cm = np.array(scores["test"]["confusion_matrix"])
    assert cm.sum() == 12 * 7
    assert metrics["test"]["accuracy"] == round(np.trace(cm) / cm.sum(), 4)
    with open(root / "reports/evaluate/test_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert np.mean([r["actual"] == r["predicted"] for r in rows]) == pytest.approx(scores["test"]["accuracy"])
    assert {f"{split}_tta_{mode}" for split in ("val", "test") for mode in ("flip", "ten_crop", "scale_rotate")} <= metrics.keys()
    calibrated = json.loads((root / "reports/evaluate/calibration.json").read_text())
    assert calibrated["method"] == "temperature" and 0.05 <= calibrated["temperature"] <= 20
    assert metrics["calibration"]["ece_after"] == calibrated["test_ece"]["flip"]["after"]
    assert sum(b["faces"] for b in calibrated["reliability"]["after"]) == 12 * 7
    assert (root / "reports/evaluate/reliability.png").stat().st_size > 0

    run_id = json.loads((root / "reports/train/run.json").read_text())["run_id"]
    assert [r[0] for r in mlflow_runs(root)] == [run_id]
    with sqlite3.connect(root / "mlflow.db") as db:
        keys = {k for (k,) in db.execute("select distinct key from metrics where run_uuid=?", (run_id,))}
        tags = dict(db.execute("select key, value from tags where run_uuid=?", (run_id,)))
        epochs = db.execute("select count(*) from metrics where run_uuid=? and key='val_accuracy'", (run_id,)).fetchone()[0]
    assert {"accuracy", "val_accuracy", "eval/test_accuracy", "eval/test_macro_f1", "eval/test_f1_disgust"} <= keys
    assert epochs == 2
    assert tags["data_sha256"] == summary["table_sha256"] and len(tags["git_commit"]) >= 40
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    (given,) = client.get_run(run_id).inputs.dataset_inputs  # the UI's Dataset column: FER2013 and its checksum
    assert given.dataset.name == "fer2013" and given.dataset.digest == summary["table_sha256"][:32]
    assert json.loads(given.dataset.profile) == {"Training": 12 * 7, "PublicTest": 12 * 7, "PrivateTest": 12 * 7}
    artifacts = list((root / "mlartifacts").rglob("model_h5/model.h5"))  # the training run's copy of the .h5
    assert artifacts and artifacts[0].stat().st_size == (root / "models/model.h5").stat().st_size

    shown = run(["dvc", "metrics", "show"], root, env).stdout
    assert "test.accuracy" in shown
    run(["dvc", "plots", "show", "-o", "plots_html"], root, env)
    page = (root / "plots_html/index.html").read_text()
    assert "PrivateTest confusion matrix" in page and "Accuracy, train vs PublicTest" in page

    # nothing changed: nothing re-runs
    again = run(["dvc", "repro"], root, env).stdout
    assert "Running stage" not in again

    # the same seed trains the same model: training again gives the same curves and scores
    run(["dvc", "repro", "-f", "-s", "train"], root, env)
    run(["dvc", "repro"], root, env)
    rerun = list(csv.DictReader(open(root / "reports/train/history.csv")))
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rerun] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in history
    ]
    assert json.loads((root / "reports/metrics.json").read_text()) == metrics


def test_dvc_exp_run_lands_in_the_project_database(project):
    root, env = project
    run(["dvc", "repro"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline"], root, env)
    run(["dvc", "exp", "run", "-n", "one-epoch", "-S", "train.epochs=1"], root, env)
    runs = mlflow_runs(root)
    assert len(runs) == 2
    assert runs[-1][1] == "one-epoch" and runs[-1][2] == "FINISHED"
    # --temp runs in a copy under .dvc/tmp/exps/ and still logs to the project's database
    run(["dvc", "exp", "run", "--temp", "-n", "in-temp-dir", "-S", "train.epochs=1", "-S", "seed=7"], root, env)
    runs = mlflow_runs(root)
    assert len(runs) == 3 and runs[-1][1] == "in-temp-dir" and runs[-1][2] == "FINISHED"
    assert not list((root / ".dvc" / "tmp").rglob("mlflow.db"))
