"""The training input pipeline (augmentation, the batch stream) and the float32 model it hands on."""

import contextlib

import keras
import numpy as np
import pytest

from ferlab.config import Augment
from ferlab.errors import FerlabError
from ferlab.training import augment, model_io, models
from ferlab.training.pipeline import class_weight_table, make_training_dataset

OFF = Augment(
    horizontal_flip=False, translate=0, rotation_degrees=0.0, zoom=0.0, low_resolution_probability=0.0, brightness=0.0, contrast=0.0
)


def faces(n=6, seed=0):
    return np.random.default_rng(seed).random((n, 48, 48, 1)).astype(np.float32)


def test_augmentation_is_a_function_of_seed_and_batch_number():
    x = faces()
    first, again = augment.apply(x, (42, 7), Augment()).numpy(), augment.apply(x, (42, 7), Augment()).numpy()
    assert np.array_equal(first, again)
    assert not np.array_equal(first, augment.apply(x, (42, 8), Augment()).numpy())
    assert not np.array_equal(first, augment.apply(x, (43, 7), Augment()).numpy())
    assert first.shape == x.shape and first.min() >= 0.0 and first.max() <= 1.0


def test_everything_off_changes_nothing():
    x = faces()
    assert np.allclose(augment.apply(x, (1, 1), OFF).numpy(), x)


def test_flip_mirrors_some_faces_and_keeps_the_others():
    x = faces(64)
    out = augment.apply(x, (3, 0), Augment(**{**OFF.__dict__, "horizontal_flip": True})).numpy()
    mirrored = [np.array_equal(o, f[:, ::-1]) for o, f in zip(out, x)]
    kept = [np.array_equal(o, f) for o, f in zip(out, x)]
    assert all(m != k for m, k in zip(mirrored, kept)) and 10 < sum(mirrored) < 54


def test_translate_moves_whole_faces_by_whole_pixels_within_the_limit():
    x = faces(32)
    out = augment.apply(x, (5, 0), Augment(**{**OFF.__dict__, "translate": 3})).numpy()
    moved = 0
    for o, f in zip(out, x):
        # the interior of the output is the input shifted by some (dy, dx) with |dy|, |dx| <= 3
        matches = [
            (dy, dx) for dy in range(-3, 4) for dx in range(-3, 4) if np.array_equal(o[4:44, 4:44], f[4 + dy : 44 + dy, 4 + dx : 44 + dx])
        ]
        assert len(matches) == 1
        moved += matches[0] != (0, 0)
    assert moved > 20


def test_brightness_and_contrast_stay_in_range():
    x = faces(16)
    out = augment.apply(x, (9, 9), Augment(**{**OFF.__dict__, "brightness": 0.5, "contrast": 0.5})).numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0 and not np.allclose(out, x)


def test_rotation_and_zoom_run_and_keep_the_shape():
    x = faces(4)
    out = augment.apply(x, (1, 2), Augment(**{**OFF.__dict__, "rotation_degrees": 15.0, "zoom": 0.1})).numpy()
    assert out.shape == x.shape and not np.allclose(out, x)


def test_faces_left_unwarped_are_exact_whole_pixel_shifts():
    x = faces(64)
    warp = {**OFF.__dict__, "translate": 4, "rotation_degrees": 15.0, "zoom": 0.1}
    shift_only = augment.apply(x, (3, 4), Augment(**{**OFF.__dict__, "translate": 4})).numpy()
    never = augment.apply(x, (3, 4), Augment(**{**warp, "warp_probability": 0.0})).numpy()
    assert np.array_equal(never, shift_only)
    half = augment.apply(x, (3, 4), Augment(**{**warp, "warp_probability": 0.5})).numpy()
    exact = [np.array_equal(a, b) for a, b in zip(half, shift_only)]
    assert 16 <= sum(exact) <= 48  # about half the faces kept sharp, the rest turned or zoomed


def test_a_warp_probability_outside_0_1_is_a_params_error():
    with pytest.raises(FerlabError, match="warp_probability"):
        Augment(warp_probability=1.5)


def roughness(x):
    """Mean absolute difference between neighbouring pixels: what a blur takes away."""
    return np.abs(np.diff(x, axis=1)).mean(axis=(1, 2, 3)) + np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3))


def test_low_resolution_blurs_the_chosen_faces_and_leaves_the_others_exact():
    x = faces(64)
    everyone = augment.apply(x, (2, 5), Augment(**{**OFF.__dict__, "low_resolution_probability": 1.0, "low_resolution_min_px": 12})).numpy()
    assert everyone.shape == x.shape and everyone.min() >= 0.0 and everyone.max() <= 1.0
    assert np.all(roughness(everyone) < 0.8 * roughness(x))  # random pixels lose most of their detail at 12..47 px
    half = augment.apply(x, (2, 5), Augment(**{**OFF.__dict__, "low_resolution_probability": 0.5})).numpy()
    exact = np.array([np.array_equal(a, b) for a, b in zip(half, x)])
    assert 16 <= exact.sum() <= 48
    assert np.all(roughness(half[~exact]) < roughness(x[~exact]))


def test_the_low_resolution_size_changes_from_batch_to_batch():
    x = np.tile(faces(1), (8, 1, 1, 1))
    policy = Augment(**{**OFF.__dict__, "low_resolution_probability": 1.0, "low_resolution_min_px": 8})
    sizes = {round(float(roughness(augment.apply(x, (7, step), policy).numpy())[0]), 5) for step in range(6)}
    assert len(sizes) >= 3


@pytest.mark.parametrize("setting", [{"low_resolution_probability": -0.1}, {"low_resolution_min_px": 48}, {"low_resolution_min_px": 2}])
def test_low_resolution_settings_outside_their_range_are_a_params_error(setting):
    with pytest.raises(FerlabError, match=next(iter(setting))):
        Augment(**setting)


def batches(ds, n):
    return [tuple(np.asarray(t) for t in batch) for batch in ds.take(n)]


@pytest.mark.parametrize(
    "policy",
    [
        Augment(rotation_degrees=0.0, zoom=0.0, low_resolution_probability=0.0),
        Augment(rotation_degrees=10.0, zoom=0.1, warp_probability=0.5, low_resolution_probability=0.3),
    ],
    ids=["shift", "warp-lowres"],
)
def test_the_batch_stream_repeats_run_to_run_and_a_resumed_run_continues_it(policy):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 48, 48), dtype=np.uint8)
    y = rng.integers(0, 7, 50)
    weights = {i: 1.0 + i for i in range(7)}
    full = batches(make_training_dataset(x, y, 16, 42, policy, weights), 12)  # 3 epochs of 4 batches
    assert all(
        np.array_equal(a, b)
        for fa, fb in zip(full, batches(make_training_dataset(x, y, 16, 42, policy, weights), 12))
        for a, b in zip(fa, fb)
    )
    resumed = batches(make_training_dataset(x, y, 16, 42, policy, weights, start_step=8), 4)
    for (fa, ta, wa), (fb, tb, wb) in zip(full[8:], resumed):
        assert np.array_equal(fa, fb) and np.array_equal(ta, tb) and np.array_equal(wa, wb)
    # each epoch is a new order of the same 50 faces, with the label's weight beside each face
    first_epoch = np.concatenate([t.argmax(1) for _, t, _ in full[:4]])
    second_epoch = np.concatenate([t.argmax(1) for _, t, _ in full[4:8]])
    assert sorted(first_epoch) == sorted(y) and not np.array_equal(first_epoch, second_epoch)
    assert np.array_equal(full[0][2], 1.0 + full[0][1].argmax(1))


def test_class_weights_as_preprocess_writes_them_reach_the_loss():
    """meta.json stores the weights with string keys; every face must carry its class's weight."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 48, 48), dtype=np.uint8)
    y = np.arange(40) % 7
    from_json = {"0": 1.01, "1": 3.07, "2": 1.0, "3": 0.75, "4": 0.92, "5": 1.14, "6": 0.91}
    (_, targets, weights), *_ = batches(make_training_dataset(x, y, 40, 42, Augment(), from_json), 1)
    expected = np.array([from_json[str(c)] for c in targets.argmax(1)], np.float32)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert class_weight_table({1: 2.0}) == [1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown class ids"):
        class_weight_table({"9": 2.0})


def test_a_model_trained_in_bfloat16_is_handed_on_in_float32(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = models.build("ferlab_cnn")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.layers[2].compute_dtype == "bfloat16"
    plain = model_io.as_float32(mixed)
    assert {layer.dtype_policy.name for layer in plain.layers} == {"float32"}
    x = faces(4)
    assert np.allclose(plain.predict(x, verbose=0), mixed.predict(x, verbose=0), atol=0.02)

    # a .h5 saved with the mixed policy (by an older ferlab) also loads as float32
    model_io.save_h5(mixed, tmp_path / "mixed.h5")
    loaded = model_io.load_h5(tmp_path / "mixed.h5")
    assert {layer.dtype_policy.name for layer in loaded.layers} == {"float32"}
    assert np.allclose(loaded.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-5)


def test_a_float32_model_of_plain_keras_layers_is_returned_as_it_is():
    model = models.build("paper_cnn")
    assert model_io.as_float32(model) is model
    handed_on = model_io.as_float32(models.build("ferlab_cnn"))  # its fused batch norms become Keras' own
    assert model_io.as_float32(handed_on) is handed_on


@pytest.mark.parametrize("crop, seen", [(44, (44, 44)), (48, (48, 48))])
def test_ferlab_cnn_looks_at_the_centre_crop(crop, seen):
    model = models.build("ferlab_cnn", crop=crop)
    assert tuple(model.input.shape[1:]) == (48, 48, 1)
    first_conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert tuple(first_conv.input.shape[1:3]) == seen
    assert model.count_params() == 707_391


class FailingCallback(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise RuntimeError("a user's callback failed")


def draws():
    import random

    import tensorflow as tf

    return random.random(), float(np.random.random()), float(keras.random.uniform(())), float(tf.random.uniform(()))


@pytest.mark.parametrize("outcome", ["returns", "raises"])
def test_training_leaves_the_process_as_it_found_it(tmp_path, outcome):
    """train() sets the precision policy, seeds and op determinism; a notebook or test that trains and then
    goes on must find its own again, whether training returned or raised."""
    from tensorflow.python.framework import config as tf_config

    from ferlab.config import Params, Train
    from ferlab.data.arrays import Arrays
    from ferlab.training.train import train

    rng = np.random.default_rng(0)
    x = {split: rng.integers(0, 256, (16, 48, 48), dtype=np.uint8) for split in ("train", "val")}
    y = {split: np.arange(16) % 7 for split in ("train", "val")}
    params = Params(train=Train(epochs=1, batch_size=8, precision="mixed_bfloat16", deterministic=True))
    tf_config.disable_op_determinism()
    keras.utils.set_random_seed(5)  # the caller's own seed
    expected = draws()

    keras.utils.set_random_seed(5)
    failing = outcome == "raises"
    with pytest.raises(RuntimeError) if failing else contextlib.nullcontext():
        train(params, Arrays(x, y, {}), None, "digest", tmp_path, print_fn=lambda _: None, extra_callbacks=(FailingCallback(),) * failing)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert not tf_config.is_op_determinism_enabled()
    assert draws() == expected


@pytest.mark.parametrize(
    "schedule, warmup, start, after_warmup, end",
    [
        ("cosine", 1, 0.005, 0.05, 0.0005),
        ("constant", 1, 0.005, 0.05, 0.05),  # warmed up, then constant: SGD at 0.05 from a cold start stalled the long network
        ("constant", 0, 0.05, 0.05, 0.05),  # the paper's run: Adam at a constant rate from the first step
    ],
)
def test_both_schedules_warm_up_when_asked(schedule, warmup, start, after_warmup, end):
    from ferlab.config import Train
    from ferlab.training.schedule import make_optimizer

    cfg = Train(optimizer="sgd", learning_rate=0.05, schedule=schedule, warmup_epochs=warmup, epochs=10)
    lr = make_optimizer(cfg, steps_per_epoch=100)._learning_rate  # the schedule itself, not its value at step 0
    rate = (lambda step: float(lr(step))) if callable(lr) else (lambda step: float(lr))
    assert rate(0) == pytest.approx(start, rel=1e-4) and rate(100) == pytest.approx(after_warmup, rel=1e-4)
    assert rate(1000) == pytest.approx(end, rel=1e-4)
    assert rate(550) == pytest.approx(0.05 if schedule == "constant" else 0.0253, rel=0.01)
