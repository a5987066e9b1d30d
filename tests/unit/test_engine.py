"""train.engine=jax: the one trainer on Keras' JAX backend (a GPU machine without TensorFlow). It trains what
the TensorFlow engine trains, with the same recipe, selection, averaging and resumable state; the model it hands
on predicts in TensorFlow what it predicts in JAX; its augmentation is ferlab's, as TensorFlow computes it.
JAX runs in subprocesses (JAX_PLATFORMS=cpu): Keras takes its backend once a process."""

import dataclasses
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ferlab.config import Augment, Params, Train
from ferlab.errors import FerlabError
from ferlab.training import engine
from ferlab.training.state import fingerprint

REPO = Path(__file__).resolve().parents[2]
WIDTHS = [16, 32, 64, 128]  # the smallest ferlab_cnn measured: the test trains it on the CPU
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX (the dev extra)")

TRAIN_ON_JAX = """
import json, sys, numpy as np
from pathlib import Path
from ferlab.config import Augment, Params, Preprocess, Train
from ferlab.data.arrays import Arrays
from ferlab.training import engine
engine.select("jax")
import keras
from ferlab.training import model_io
from ferlab.training.train import train

out = Path(sys.argv[1])
data = np.load(out / "data.npz")
arrays = Arrays({"train": data["x_train"], "val": data["x_val"]}, {"train": data["y_train"], "val": data["y_val"]}, {})
params = Params(
    train=Train(model_options={"widths": %(widths)s}, epochs=2, batch_size=64, average_epochs=2, precision="float32", engine="jax"),
    preprocess=Preprocess(augment=Augment(low_resolution_probability=0.5)),
)
weights = {str(i): 1.0 + i / 10 for i in range(7)}


class Cut(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt  # as Ctrl+C after the first epoch


class Epochs(keras.callbacks.Callback):
    ran = []

    def on_epoch_begin(self, epoch, logs=None):
        self.ran.append(epoch + 1)


class NoTensorFlow:  # as on a GPU machine without TensorFlow: the JAX engine trains without it
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            raise ImportError("no TensorFlow on this machine")


sys.meta_path.insert(0, NoTensorFlow())
whole = train(params, arrays, weights, "digest", out / "whole", print_fn=lambda _: None)
try:
    train(params, arrays, weights, "digest", out / "cut", print_fn=lambda _: None, extra_callbacks=(Cut(),))
except KeyboardInterrupt:
    pass
resumed = train(params, arrays, weights, "digest", out / "cut", print_fn=lambda _: None, extra_callbacks=(Epochs(),))
trained_without_tensorflow = "tensorflow" not in sys.modules
sys.meta_path.pop(0)  # model_io.save_h5 below, as the train stage runs it, imports TensorFlow
np.save(out / "jax.npy", whole.model.predict(data["x_val"][..., None].astype("float32") / 255.0, verbose=0))
model_io.save_h5(whole.model, out / "model.h5")
json.dump(
    {
        "backend": keras.backend.backend(),
        "trained_without_tensorflow": trained_without_tensorflow,
        "history": whole.history,
        "resumed_history": resumed.history,
        "best_val_accuracy": whole.best_val_accuracy,
        "average_val_accuracy": whole.average_val_accuracy,
        "averaged_epochs": whole.averaged_epochs,
        "resumed_epochs": Epochs.ran,
    },
    open(out / "result.json", "w"),
)
"""


def jax_env() -> dict:
    return os.environ | {"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO / "src")}


@needs_jax
def test_the_jax_engine_trains_resumes_and_hands_on_a_model_tensorflow_predicts_alike(tmp_path):
    """The GPU path end to end on the CPU, through ferlab.training.train.train with train.engine=jax: the
    recipe's class weights, low-resolution faces and a two-epoch average; a run cut after its first epoch
    resumes to the same weights; the .h5 it hands on predicts in TensorFlow what the JAX model predicted."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 320)
    faces = rng.integers(0, 80, (320, 48, 48)).astype(np.uint8)
    for face, label in zip(faces, labels):  # a bright square whose place names the class: learnable
        face[4 + 5 * label : 12 + 5 * label, 10:30] = 230
    np.savez(tmp_path / "data.npz", x_train=faces[:256], y_train=labels[:256], x_val=faces[256:], y_val=labels[256:])
    script = TRAIN_ON_JAX % {"widths": WIDTHS}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, env=jax_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["backend"] == "jax" and result["trained_without_tensorflow"]
    assert [int(row["epoch"]) for row in result["history"]] == [1, 2]
    # the run cut after its first epoch resumed from it (its first epoch's row as the whole run's), not from the start
    first, again = result["history"][0], result["resumed_history"][0]
    assert {k: v for k, v in first.items() if k != "seconds"} == {k: v for k, v in again.items() if k != "seconds"}
    assert [int(row["epoch"]) for row in result["resumed_history"]] == [1, 2] and result["resumed_epochs"] == [2]
    assert result["average_val_accuracy"] is not None  # the two epochs' average was scored, kept only if better

    from ferlab.training import model_io

    model = model_io.load_h5(tmp_path / "model.h5")
    by_tensorflow = model.predict(faces[256:, ..., None].astype(np.float32) / 255.0, verbose=0)
    by_jax = np.load(tmp_path / "jax.npy")
    assert by_tensorflow.shape == (64, 7) and np.allclose(by_tensorflow, by_jax, atol=1e-4)
    assert len(np.unique(by_tensorflow.argmax(1))) > 1  # not a constant answer: the weights carry what was learnt
    kept = result["average_val_accuracy"] if result["averaged_epochs"] else result["best_val_accuracy"]
    assert kept == pytest.approx(np.mean(by_jax.argmax(1) == labels[256:]), abs=1e-6)
    assert kept >= result["best_val_accuracy"]


def test_the_low_resolution_operators_shrink_and_scale_back_as_tensorflow_does():
    """JAX has no resize of a size drawn at run time, so the JAX engine applies TF's area-then-bilinear round
    trip as one matrix per size on each axis: for every size they must give what TensorFlow gives."""
    import tensorflow as tf

    from ferlab.training.augment import _low_resolution
    from ferlab.training.augment_jax import low_resolution_operators

    faces = np.random.default_rng(1).random((3, 48, 48, 1)).astype(np.float32)
    operators = low_resolution_operators(48, 20)
    assert operators.shape == (28, 48, 48)
    for side, m in zip(range(20, 48), operators):
        by_tf = tf.image.resize(tf.image.resize(faces, [side, side], method="area"), [48, 48], method="bilinear").numpy()
        assert np.allclose(np.einsum("ij,bjk,lk->bil", m, faces[..., 0], m), by_tf[..., 0], atol=1e-5), side
    # and the augmentation itself, where its one random size can only be 47
    policy = Augment(low_resolution_probability=1.0, low_resolution_min_px=47)
    shrunk = _low_resolution(tf, tf.constant(faces), 3, 48, policy, tf.constant([7, 1], tf.int64)).numpy()
    assert np.allclose(np.einsum("ij,bjk,lk->bil", operators[-1], faces[..., 0], operators[-1]), shrunk[..., 0], atol=1e-5)
    assert not np.allclose(shrunk, faces, atol=1e-3)  # a real change, not the identity


@needs_jax
def test_the_jax_augmentation_shrinks_faces_as_tensorflow_does(tmp_path):
    """augment_jax.apply itself, every other step off and the one size 47 px: what the JAX engine feeds the
    network is what ferlab's TensorFlow augmentation gives."""
    import tensorflow as tf

    from ferlab.contract import PIXEL_SCALE
    from ferlab.training.augment import apply

    faces = np.random.default_rng(2).integers(0, 256, (4, 48, 48)).astype(np.uint8)
    np.save(tmp_path / "faces.npy", faces)
    policy = Augment(
        horizontal_flip=False,
        translate=0,
        rotation_degrees=0.0,
        zoom=0.0,
        brightness=0.0,
        contrast=0.0,
        low_resolution_probability=1.0,
        low_resolution_min_px=47,
    )
    (tmp_path / "policy.json").write_text(json.dumps(dataclasses.asdict(policy)))
    script = (
        "import json, numpy as np, jax; from ferlab.training.augment_jax import apply; "
        f"from ferlab.config import Augment; x = np.load('{tmp_path / 'faces.npy'}'); "
        f"policy = Augment(**json.loads(open('{tmp_path / 'policy.json'}').read())); "
        f"np.save('{tmp_path / 'jax.npy'}', np.asarray(apply(x, jax.random.key(0), policy)))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=jax_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    by_jax = np.load(tmp_path / "jax.npy")
    by_tf = apply(tf.constant(faces[..., None].astype(np.float32) / PIXEL_SCALE), tf.constant([3, 0], tf.int64), policy).numpy()
    assert by_jax.shape == by_tf.shape == (4, 48, 48, 1)
    assert np.allclose(by_jax, by_tf, atol=1e-5)
    assert not np.allclose(by_tf, faces[..., None] / PIXEL_SCALE, atol=1e-3)  # the faces were shrunk, not passed through


def test_keras_already_on_tensorflow_cannot_train_on_jax_and_says_how_to():
    import keras

    assert keras.backend.backend() == "tensorflow"
    engine.select("tensorflow", env={})  # the backend it runs on: nothing to do
    with pytest.raises(FerlabError, match="KERAS_BACKEND=jax"):
        engine.select("jax", env={})
    with pytest.raises(FerlabError, match="tensorflow, jax"):
        engine.select("torch", env={})


def test_select_sets_the_backend_for_a_process_that_has_not_imported_keras():
    done = subprocess.run(
        [sys.executable, "-c", "import os; from ferlab.training import engine; engine.select('jax'); print(os.environ['KERAS_BACKEND'])"],
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stdout.strip() == "jax", done.stderr[-2000:]


def test_the_engine_is_part_of_what_a_state_belongs_to_and_old_states_still_resume():
    default = Params(train=Train())
    on_jax = dataclasses.replace(default, train=dataclasses.replace(default.train, engine="jax"))
    assert fingerprint(default, "digest") != fingerprint(on_jax, "digest")  # other random streams: not resumed across
    # the default's fingerprint leaves the key out, as it was before train.engine existed: a state left then resumes
    train = {k: v for k, v in dataclasses.asdict(default.train).items() if k not in ("average_epochs", "engine")}
    before = {"train": train, "preprocess": dataclasses.asdict(default.preprocess), "seed": default.seed, "data": "digest"}
    assert fingerprint(default, "digest") == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]


@needs_jax
def test_the_jax_batch_stream_repeats_run_to_run_and_a_resumed_run_continues_it(tmp_path):
    """As the tf.data stream does: batch number s of a run resumed at step k is batch s of the whole run."""
    script = (
        "import numpy as np; from ferlab.config import Augment; from ferlab.training.pipeline import jax_training_batches; "
        "x = np.random.default_rng(0).integers(0, 256, (10, 48, 48)).astype(np.uint8); y = np.arange(10) % 7; "
        "w = {i: 1.0 + i for i in range(7)}; take = lambda g, n: [tuple(np.asarray(t) for t in next(g)) for _ in range(n)]; "
        "whole = take(jax_training_batches(x, y, 4, 7, Augment(), w), 7); "
        "again = take(jax_training_batches(x, y, 4, 7, Augment(), w), 7); "
        "resumed = take(jax_training_batches(x, y, 4, 7, Augment(), w, start_step=4), 3); "
        "same = lambda a, b: all(np.array_equal(p, q) for u, v in zip(a, b) for p, q in zip(u, v)); "
        "print(same(whole, again), same(whole[4:], resumed), [len(b[1]) for b in whole], same(whole[:3], whole[3:6]), "
        "sorted(np.concatenate([b[1].argmax(1) for b in whole[:3]]).tolist()) == sorted(y.tolist()))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=jax_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    # repeats; resumes; 3 batches an epoch (4, 4, 2); epoch 2 is another order and other draws; an epoch holds every face once
    assert done.stdout.split("\n")[-2] == "True True [4, 4, 2, 4, 4, 2, 4] False True"
