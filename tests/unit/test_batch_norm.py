"""FusedBatchNormalization trains as keras.layers.BatchNormalization does (outputs, gradients,
moving averages), and the models ferlab saves hold plain Keras layers."""

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from ferlab.training import model_io, models
from ferlab.training.batch_norm import FusedBatchNormalization, portable


def _step(layer, x):
    """Output, gradients of a weighted sum (input, gamma, beta) and the moving averages after one
    training call."""
    weights = tf.constant(np.random.default_rng(1).normal(size=x.shape), tf.float32)
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [np.asarray(tf.cast(t, tf.float32)) for t in (y, *grads, layer.moving_mean, layer.moving_variance)]


@pytest.mark.parametrize("policy, tolerance", [("float32", 1e-4), ("mixed_bfloat16", 2e-2)])
def test_a_training_step_matches_keras_batch_normalization(policy, tolerance):
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(8, 6, 5, 4)).astype("float32")
    keras.mixed_precision.set_global_policy(policy)
    try:
        ours, theirs = FusedBatchNormalization(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
        got, want = _step(ours, x), _step(theirs, x)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert got[0].dtype == want[0].dtype
    for name, a, b in zip(("output", "d input", "d gamma", "d beta", "moving mean", "moving variance"), got, want):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance, err_msg=name)
    assert not np.allclose(got[-1], 1.0)  # the moving variance moved: the comparison above means something


def test_inputs_the_fused_kernel_does_not_take_train_as_keras_does():
    x = np.random.default_rng(5).normal(1.0, 2.0, size=(16, 3)).astype("float32")  # not NHWC images
    got, want = _step(FusedBatchNormalization(momentum=0.9), x), _step(keras.layers.BatchNormalization(momentum=0.9), x)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_inference_uses_the_moving_averages_as_keras_does():
    x = np.random.default_rng(2).normal(size=(3, 4, 4, 2)).astype("float32")
    ours, theirs = FusedBatchNormalization(), keras.layers.BatchNormalization()
    ours.build(x.shape), theirs.build(x.shape)
    stats = [np.array([1.0, 2.0]), np.array([0.5, 1.5]), np.array([0.3, -0.2]), np.array([2.0, 0.25])]
    ours.set_weights(stats), theirs.set_weights(stats)
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False), rtol=1e-6, atol=1e-6)


def test_a_training_step_is_repeatable_under_op_determinism():
    tf_config.enable_op_determinism()
    try:
        x = np.random.default_rng(3).normal(size=(8, 6, 6, 3)).astype("float32")
        first, second = (_step(FusedBatchNormalization(), x) for _ in range(2))
    finally:
        tf_config.disable_op_determinism()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_saved_models_hold_plain_keras_layers_and_predict_the_same(tmp_path):
    model = models.build("ferlab_cnn", widths=[4, 8, 8, 8])
    assert any(isinstance(layer, FusedBatchNormalization) for layer in model.layers)
    model_io.save_h5(model, tmp_path / "model.h5")
    with h5py.File(tmp_path / "model.h5") as f:
        config = f.attrs["model_config"]
    assert "FusedBatchNormalization" not in config and '"BatchNormalization"' in config
    loaded = model_io.load_h5(tmp_path / "model.h5")
    assert not any(layer.name.startswith("fused") for layer in loaded.layers)
    x = np.random.default_rng(4).random((2, 48, 48, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    assert portable(loaded) is loaded  # nothing left to replace
