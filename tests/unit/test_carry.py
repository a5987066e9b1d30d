"""ferlab.training.carry: training on a machine with JAX but no TensorFlow, DVC or MLflow (a lent GPU), and back.
What travels holds the Training and PublicTest faces exactly (and no PrivateTest face); the state trained there,
without TensorFlow, is one the trainer here takes as finished: it trains no epoch, logs the carried epochs to the
run's tracker and hands on the model trained there."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ferlab.data import arrays as arrays_mod
from ferlab.training import carry

REPO = Path(__file__).resolve().parents[2]
needs_jax = pytest.mark.skipif(__import__("importlib.util").util.find_spec("jax") is None, reason="needs JAX (the dev extra)")


def processed(tmp_path: Path, n_train=256, n_val=64, n_test=32) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    x, y = {}, {}
    for key, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        y[key] = rng.integers(0, 7, n)
        x[key] = rng.integers(0, 80, (n, 48, 48)).astype(np.uint8)
        for face, label in zip(x[key], y[key]):  # a bright square whose place names the class: learnable
            face[4 + 5 * label : 12 + 5 * label, 10:30] = 230
    folder = tmp_path / "processed"
    folder.mkdir()
    arrays_mod.save(arrays_mod.Arrays(x, y, {k: np.arange(len(y[k])) for k in y}), folder / arrays_mod.ARRAY_FILE)
    (folder / arrays_mod.META_FILE).write_text(json.dumps({"class_weights": {str(i): 1.0 + i / 10 for i in range(7)}}))
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"table_sha256": "ab" * 32}))
    return folder, summary


def test_what_travels_is_training_and_publictest_exactly_with_the_weights_and_the_data_digest(tmp_path):
    folder, summary = processed(tmp_path)
    facts = carry.pack(folder, summary, tmp_path / "carried.npz")
    assert (facts["train"], facts["val"]) == (256, 64)
    arrays, weights, digest = carry.unpack(tmp_path / "carried.npz")
    source = arrays_mod.load(folder / arrays_mod.ARRAY_FILE)
    assert set(arrays.x) == {"train", "val"}  # PrivateTest stays here
    for key in ("train", "val"):
        assert np.array_equal(arrays.x[key], source.x[key]) and np.array_equal(arrays.y[key], source.y[key])
    assert weights == {str(i): 1.0 + i / 10 for i in range(7)} and digest == "ab" * 32


def test_a_value_set_for_a_key_params_yaml_lacks_is_refused_unless_added(tmp_path):
    from ferlab.errors import FerlabError

    with pytest.raises(FerlabError, match="no key 'train.nonsense'"):
        carry.overridden(REPO / "params.yaml", ["train.nonsense=1"])
    params = carry.overridden(REPO / "params.yaml", ["train.engine=jax", "++train.model_options.widths=[8,8,8,8]", "train.epochs=3"])
    assert (params.train.engine, params.train.model_options, params.train.epochs) == ("jax", {"widths": [8, 8, 8, 8]}, 3)


FINISH_HERE = """
import json, sys, numpy as np
from pathlib import Path
from ferlab.training import carry, engine
engine.select("jax")  # as the train stage does, from train.engine
import keras
from ferlab.training.train import train

tmp = Path(sys.argv[1])
params = carry.overridden("params.yaml", json.loads(sys.argv[2]))
arrays, weights, digest = carry.unpack(tmp / "carried.npz")


class Tracker:
    metrics, params = [], {}

    def start(self, run_id=None):
        return "run-1"

    def log_params(self, values):
        self.params.update(values)

    def log_metrics(self, values, step=None):
        self.metrics.append((step, values))


class Epochs(keras.callbacks.Callback):
    ran = []

    def on_epoch_begin(self, epoch, logs=None):
        self.ran.append(epoch + 1)


result = train(params, arrays, weights, digest, tmp / "state", Tracker(), print_fn=lambda _: None, extra_callbacks=(Epochs(),))
probs = result.model.predict(arrays.x["val"][..., None].astype("float32") / 255.0, verbose=0)
json.dump({"ran": Epochs.ran, "steps": [s for s, _ in Tracker.metrics], "engine": Tracker.params["train.engine"],
           "run_id": result.run_id, "best": result.best_val_accuracy, "kept_accuracy": float(np.mean(probs.argmax(1) == arrays.y["val"]))},
          open(tmp / "finished.json", "w"))
"""


@needs_jax
def test_a_state_trained_there_without_tensorflow_is_finished_here_without_training(tmp_path):
    folder, summary = processed(tmp_path)
    carry.pack(folder, summary, tmp_path / "carried.npz")
    overrides = ["train.engine=jax", "++train.model_options.widths=[16,32,64,128]", "train.epochs=2", "train.batch_size=64"]
    overrides += ["train.precision=float32"]
    argv = ["train", "--data", str(tmp_path / "carried.npz"), "--state", str(tmp_path / "state")]
    argv += [a for o in overrides for a in ("-S", o)]
    there = (
        "import sys\n"
        "class NoTensorFlow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'tensorflow': raise ImportError('no TensorFlow on this machine')\n"
        "sys.meta_path.insert(0, NoTensorFlow())\n"
        "from ferlab.training import carry\n"
        f"carry.main({argv!r})\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    env = os.environ | {"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", there], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((tmp_path / "state/state.json").read_text())
    assert state["finished"] and state["epochs_done"] == 2 and state["checkpoint"] is None
    assert not list((tmp_path / "state").glob("epoch-*"))  # the last checkpoint is not carried

    done = subprocess.run(
        [sys.executable, "-c", FINISH_HERE, str(tmp_path), json.dumps(overrides)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    finished = json.loads((tmp_path / "finished.json").read_text())
    assert finished["ran"] == []  # no epoch trained here
    assert finished["steps"] == [1, 2] and finished["engine"] == "jax" and finished["run_id"] == "run-1"  # the carried epochs, logged
    assert finished["kept_accuracy"] == pytest.approx(finished["best"], abs=1e-6)  # the best epoch trained there, handed on
