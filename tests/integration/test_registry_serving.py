"""Package, register, promote and serve: against the embedded SQLite store and a real `mlflow server`."""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import h5py
import numpy as np
import pytest

from ferlab.training.calibration import tempered
from ferlab.training.evaluate import predict_proba
from ferlab.training.model_io import load_h5
from integration.conftest import free_port, run, set_params, wait_http

pytestmark = pytest.mark.slow
NAME = "ferlab-emotion"


def post_json(url, payload):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


BANNERS = (
    "oneDNN",
    "cuda",
    "cuInit",
    "cpu_feature_guard",
    "absl",
    "Traceback",
    "UserWarning",
    "FutureWarning",
    "HDF5 file",
    "Created version",
)


def test_package_bundle_and_candidate_then_mlflow_serves_it(project):
    root, env = project
    # bfloat16 training, native on AVX512-BF16/AMX CPUs and emulated elsewhere: the model
    # handed on must still be a float32 one that TFLite converts and every CPU runs
    set_params(root, **{"train.precision": "mixed_bfloat16"})
    out = run(["dvc", "repro"], root, env)
    assert json.loads((root / "reports/train/run.json").read_text())["precision"] == "mixed_bfloat16"
    for h5 in (root / "models/model.h5", root / "models/bundle/model.h5"):
        with h5py.File(h5) as f:
            config = f.attrs["model_config"]
        assert "bfloat16" not in config and '"float32"' in config
    shown = out.stdout + out.stderr
    assert not [b for b in BANNERS if b in shown], shown[-3000:]
    bundle = root / "models/bundle"
    for name in ("model.h5", "model.tflite", "labels.json", "preprocessing.json", "metrics.json", "MODEL_CARD.md"):
        assert (bundle / name).stat().st_size > 0, name
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["export"]["h5_accuracy"] - metrics["export"]["tflite_accuracy"] <= 0.05
    assert [e["name"] for e in json.loads((bundle / "labels.json").read_text())["emotions"]][:2] == ["angry", "disgust"]
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "Not for decisions about people" in card and "| disgust |" in card
    assert "calibrated by a softmax temperature" in card and "calibration" in metrics

    from importlib.metadata import version

    requirements = [p.read_text() for p in (root / "mlartifacts").rglob("requirements.txt")]
    assert any(f"tensorflow=={version('tensorflow')}" in r and f"keras=={version('keras')}" in r for r in requirements)

    listed = run(["ferlab", "models", "list"], root, env).stdout
    assert "candidate" in listed and "   1  " in listed
    missing = run(["ferlab", "models", "promote", "9"], root, env, check=False)
    assert missing.returncode != 0 and "version 9 of 'ferlab-emotion': not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    promoted = run(["ferlab", "models", "promote"], root, env)
    assert "version 1 is now in production" in promoted.stdout

    port = free_port()
    serve_env = env | {"MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    server = subprocess.Popen(
        ["mlflow", "models", "serve", "-m", f"models:/{NAME}@production", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=root,
        env=serve_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", server, seconds=180)
        with np.load(root / "data/processed/arrays.npz") as data:
            faces = data["x_test"][:5].astype(np.float32)
        answer = post_json(f"http://127.0.0.1:{port}/invocations", {"inputs": faces.tolist()})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    rows = answer["predictions"]
    assert len(rows) == 5
    emotions = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for row in rows:
        assert sum(row[e] for e in emotions) == pytest.approx(1.0, abs=1e-4)
        assert row["emotion"] == max(emotions, key=lambda e: row[e])
    # the registered model returns the calibrated probabilities: the trained model's, tempered
    temperature = json.loads((root / "reports/evaluate/calibration.json").read_text())["temperature"]
    raw = predict_proba(load_h5(root / "models/model.h5"), faces.astype(np.uint8))
    served = np.array([[row[e] for e in emotions] for row in rows])
    np.testing.assert_allclose(served, tempered(raw[None], temperature), atol=1e-4)


def test_pipeline_and_registry_against_a_real_mlflow_server(project, tmp_path):
    root, env = project
    port = free_port()
    server = subprocess.Popen(
        [
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", server, seconds=120)
        remote = env | {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
        run(["dvc", "repro"], root, remote)
        assert not (root / "mlflow.db").exists()  # everything went to the server
        run(["ferlab", "models", "promote"], root, remote)
        code = f"import mlflow, sys; from ferlab.lifecycle import registry; print(registry.local_model_file('{NAME}', 'production'))"
        path = run([sys.executable, "-c", code], root, remote).stdout.strip().splitlines()[-1]
        assert path.endswith(".h5") and os.path.getsize(path) > 0
        code = (
            "from ferlab.inference.sources import load_model; "
            f"classifier, contract = load_model('models:/{NAME}@production'); print(classifier.runtime, contract)"
        )
        loaded = run([sys.executable, "-c", code], root, remote).stdout.strip().splitlines()[-1]
        assert loaded.startswith("tflite CropContract(")  # the bundle's TFLite model came with the registered version
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    assert list((tmp_path / "artifacts").rglob("model.h5"))
