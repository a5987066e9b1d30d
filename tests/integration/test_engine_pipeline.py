"""train.engine=jax through the real pipeline: `dvc exp run -S train.engine=jax` on a slice of the real data
trains on Keras' JAX backend (here on the CPU) and the later stages take its model as they take TensorFlow's:
model.h5, reports/train, one MLflow run naming the engine, the evaluate stage's figures and the bundle."""

import importlib.util
import json
import sqlite3

import pytest

from integration.conftest import run

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX (the dev extra)")


def test_dvc_exp_run_with_the_jax_engine_makes_the_model_the_reports_the_run_and_the_bundle(project):
    root, env = project
    out = run(["dvc", "exp", "run", "-S", "train.engine=jax"], root, env | {"JAX_PLATFORMS": "cpu"}, timeout=1500)
    assert "jax" in out.stderr + out.stdout  # the train stage says what trained
    trained = json.loads((root / "reports/train/run.json").read_text())
    assert trained["epochs_run"] == 2 and trained["run_id"]
    with sqlite3.connect(root / "mlflow.db") as db:
        engine = db.execute("select value from params where key = 'train.engine' and run_uuid = ?", (trained["run_id"],)).fetchall()
    assert engine == [("jax",)]
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert 0.0 < metrics["test"]["accuracy"] <= 1.0  # the evaluate stage scored the JAX-trained .h5 in TensorFlow
    assert any((root / "models/bundle").iterdir())  # the package stage bundled it
