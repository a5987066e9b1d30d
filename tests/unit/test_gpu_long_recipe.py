"""benchmarks/gpu_long_recipe.py's JAX trainer: it augments faces as ferlab's TensorFlow code does, and what it
trains (on the CPU here, on a lent GPU for real) is the model that ferlab's TensorFlow code scores."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
WIDTHS = [16, 32, 64, 128]  # the smallest ferlab_cnn measured: the test trains it on the CPU


def test_the_low_resolution_operators_shrink_and_scale_back_as_tensorflow_does():
    """JAX has no resize of a size drawn at run time, so the trainer applies TF's area-then-bilinear round
    trip as one matrix per size on each axis: for every size they must give what TensorFlow gives."""
    import tensorflow as tf

    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu_long_recipe import low_resolution_operators

    from ferlab.config import Augment
    from ferlab.training.augment import _low_resolution

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


def test_the_jax_augmentation_shrinks_faces_as_tensorflow_does(tmp_path):
    """augment_jax itself, every other step off and the one size 47 px: what the JAX trainer feeds the
    network is what ferlab's TensorFlow augmentation gives (JAX runs in a subprocess, as in training)."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("needs JAX (the dev extra)")
    import tensorflow as tf

    from ferlab.config import Augment
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
        "import json, sys, numpy as np, jax; sys.path[:0] = ['src', 'benchmarks']; from gpu_long_recipe import augment_jax; "
        f"from ferlab.config import Augment; x = np.load('{tmp_path / 'faces.npy'}'); "
        f"policy = Augment(**json.loads(open('{tmp_path / 'policy.json'}').read())); "
        f"np.save('{tmp_path / 'jax.npy'}', np.asarray(augment_jax(x, jax.random.key(0), policy)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=os.environ | {"JAX_PLATFORMS": "cpu"}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    by_jax = np.load(tmp_path / "jax.npy")
    by_tf = apply(tf.constant(faces[..., None].astype(np.float32) / PIXEL_SCALE), tf.constant([3, 0], tf.int64), policy).numpy()
    assert by_jax.shape == by_tf.shape == (4, 48, 48, 1)
    assert np.allclose(by_jax, by_tf, atol=1e-5)
    assert not np.allclose(by_tf, faces[..., None] / PIXEL_SCALE, atol=1e-3)  # the faces were shrunk, not passed through


def test_the_epoch_count_fits_the_seconds_left_and_never_drops_below_the_epochs_done():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu_long_recipe import epochs_fitting

    # two runs sharing an H100: epochs 3-5 took 1.2 s each, 420 s - 20 s of recompilation left after epoch 5
    assert epochs_fitting(400.0, 1.2, 5) == 5 + 333
    assert epochs_fitting(-3.0, 1.2, 5) == 5  # past the budget already: no more epochs
    assert epochs_fitting(0.5, 1.2, 1) == 1


def test_jax_trains_ferlab_cnn_and_tensorflow_predicts_the_same_from_its_weights(tmp_path):
    """The GPU path end to end on the CPU: the JAX trainer (FusedBatchNormalization falls back to Keras'
    own batch normalisation there) trains a few steps; the weights it keeps load into the TensorFlow
    model that `score` builds, which predicts what JAX predicts (the best epoch's or, where PublicTest
    prefers it, the average of the last two epochs)."""
    if importlib.util.find_spec("jax") is None:  # not imported here: JAX runs in the subprocesses only
        pytest.skip("needs JAX (the dev extra)")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 320)
    faces = rng.integers(0, 80, (320, 48, 48)).astype(np.uint8)
    for face, label in zip(faces, labels):  # a bright square whose place names the class: learnable
        face[4 + 5 * label : 12 + 5 * label, 10:30] = 230
    data = tmp_path / "data.npz"
    np.savez(data, x_train=faces[:256], y_train=labels[:256], x_val=faces[256:], y_val=labels[256:], class_weights=np.ones(7, np.float32))
    out = tmp_path / "out"
    env = os.environ | {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    trained = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu_long_recipe.py"), "train", "--data", str(data), "--out", str(out)]
        + ["--max-epochs", "2", "--budget-minutes", "5", "--precision", "float32"]
        + ["-S", "preprocess.augment.low_resolution_probability=0.5", "-S", "train.batch_size=64"]
        + ["-S", f"++train.model_options.widths={WIDTHS}", "-S", "train.average_epochs=2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    weights = out / "best.weights.h5"
    np.save(tmp_path / "x_val.npy", faces[256:])
    predict = (
        "import sys, numpy as np; sys.path.insert(0, 'src'); from ferlab.contract import normalize; "
        f"from ferlab.training.models import build; m = build('ferlab_cnn', widths={WIDTHS}); m.load_weights('{weights}'); "
        f"np.save('{tmp_path / 'jax.npy'}', m.predict(normalize(np.load('{tmp_path / 'x_val.npy'}')), verbose=0))"
    )
    done = subprocess.run([sys.executable, "-c", predict], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    from ferlab.contract import normalize
    from ferlab.training.models import build

    model = build("ferlab_cnn", widths=WIDTHS)
    model.load_weights(weights)
    by_tensorflow = model.predict(normalize(faces[256:]), verbose=0)
    by_jax = np.load(tmp_path / "jax.npy")
    assert by_tensorflow.shape == (64, 7) and np.allclose(by_tensorflow, by_jax, atol=1e-4)
    assert len(np.unique(by_tensorflow.argmax(1))) > 1  # not a constant answer: the weights carry what was learnt
    history = json.loads((out / "history.json").read_text())
    assert "average_val_accuracy" in history  # the two epochs' average was scored, and kept only if better
    kept = history["average_val_accuracy"] if history["averaged_epochs"] else history["best_val_accuracy"]
    assert kept == pytest.approx(np.mean(by_jax.argmax(1) == labels[256:]), abs=1e-6)
    assert kept >= history["best_val_accuracy"]
