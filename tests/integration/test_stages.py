"""Stage scripts on real data: the full archive, bad sources, an interrupted training."""

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from integration.conftest import run, set_params

pytestmark = pytest.mark.slow


def test_full_archive_fetch_and_validate(project, archive):
    root, env = project
    set_params(root, **{"fetch.limit_per_class": None})
    run([sys.executable, "-m", "stages.fetch"], root, env)
    summary = json.loads((root / "data/raw/summary.json").read_text())
    assert summary["rows"] == 35_887
    assert {s: sum(c.values()) for s, c in summary["counts"].items()} == {"Training": 28_709, "PublicTest": 3_589, "PrivateTest": 3_589}
    assert summary["counts"]["Training"]["disgust"] == 436
    assert summary["source"]["sha256_verified"]

    run([sys.executable, "-m", "stages.validate"], root, env)
    report = json.loads((root / "reports/validation/report.json").read_text())
    assert report["success"] and report["exact_counts"]
    findings = report["findings"]
    assert sum(findings["near_blank"].values()) > 0  # FER2013 has all-black frames
    assert findings["duplicates_across_splits"]["Training~PrivateTest"] > 0
    assert findings["class_share"]["Training"]["disgust"] < 0.02


def test_bad_source_fails_in_one_line_and_keeps_previous_outputs(project, tmp_path):
    root, env = project
    run(["dvc", "repro", "fetch"], root, env)
    before = (root / "data/raw/fer2013.parquet").read_bytes()
    broken = tmp_path / "fer2013.zip"
    broken.write_bytes(b"PK\x03\x04 this is not a zip")
    set_params(root, **{"fetch.source": str(broken)})
    result = run(["dvc", "repro", "fetch"], root, env, check=False)
    assert result.returncode != 0
    assert f"error: {broken} is not a readable zip archive" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert (root / "data/raw/fer2013.parquet").read_bytes() == before


def test_critical_validation_failure_stops_the_pipeline(project):
    root, env = project
    set_params(root, **{"validate.exact_counts": "yes"})  # a slice cannot have the full counts
    result = run(["dvc", "repro", "preprocess"], root, env, check=False)
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert "validation failed: 2 critical expectation(s) not met" in output
    assert "full report: reports/validation/report.json" in output
    assert not (root / "data/processed").exists()
    assert json.loads((root / "reports/validation/report.json").read_text())["critical_failures"] == 2


def test_killed_training_resumes_where_it_stopped(project):
    root, env = project
    set_params(root, **{"train.epochs": 12})
    run(["dvc", "repro", "preprocess"], root, env)
    state = root / ".ferlab/train-state/state.json"

    def epochs_done() -> int:
        return json.loads(state.read_text()).get("epochs_done", 0) if state.is_file() else 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.train"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and epochs_done() < 1:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-way through a later epoch, or mid-write of its checkpoint
    proc.wait()
    done = epochs_done()
    assert 1 <= done < 12, "the run was not interrupted mid-way"

    out = run(["dvc", "repro", "train"], root, env)
    assert f"resuming after epoch {done}" in out.stderr
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(root / "reports/train/history.csv"))]
    assert epochs[0] == 1 and epochs[-1] <= 12 and epochs == list(range(1, len(epochs) + 1))
    with sqlite3.connect(root / "mlflow.db") as db:
        runs = db.execute("select run_uuid, status from runs").fetchall()
    assert len(runs) == 1 and runs[0][1] == "FINISHED"  # the same MLflow run continued
    assert not (root / ".ferlab/train-state").exists()
