"""Fine-tuning a trained model on a small labelled set of faces (`ferlab adapt`).

    model = with_emotions(parent, [3, 4, 6])             # a head for happy, sad, neutral: the parent's own columns
    result = fine_tune(model, faces, labels, Recipe())   # labels: 0..k-1 in the model's output order

The recipe is what benchmarks/adapt_recipe.py measured on FER2013 PublicTest faces re-framed and degraded as a
new camera would (docs/inference/adapt.md, reports/benchmarks/adapt_recipe_camera_b.json): batch normalisation's
statistics re-estimated on the user's faces (a new camera's light, contrast and blur move them first; this alone
gave most of the gain), then the two dense layers trained with AdamW at 1e-3 on a cosine decay, light augmentation
and square-root class weights. Training every layer gained no more on the held-out faces (within 1 point) and cost
2.5 more points of PrivateTest, at four times the time. The number of epochs follows the set's size (about STEPS
optimiser steps, between MIN_EPOCHS and MAX_EPOCHS); no epoch is chosen on the validation part, which stays an
honest judge.

A subset of the emotions keeps the parent's last-layer weights for those emotions, so before any step the new
model answers as the parent does with the other emotions' probabilities left out and the rest scaled to 1.
"""

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ferlab import contract
from ferlab.config import Augment
from ferlab.errors import FerlabError

LAYERS = ("all", "dense", "head")  # what trains: every layer (batch norm frozen), the two dense layers, the last one
# batch normalisation: the parent's statistics kept (frozen), re-estimated on the user's faces and then kept
# (renormalised, "AdaBN"), or trained with the rest on batch statistics (trained)
BATCH_NORM = ("frozen", "renormalised", "trained")
# milder than the FER2013 recipe's: the faces are few and their own framing is what is learnt
AUGMENT = Augment(
    horizontal_flip=True,
    translate=3,
    rotation_degrees=8.0,
    zoom=0.08,
    warp_probability=0.5,
    low_resolution_probability=0.0,
    brightness=0.1,
    contrast=0.1,
)
STEPS = 600  # optimiser steps the epochs add up to, when --epochs is not given
MIN_EPOCHS, MAX_EPOCHS = 4, 30


@dataclass(frozen=True)
class Recipe:
    layers: str = "dense"
    batch_norm: str = "renormalised"
    epochs: int | None = None  # None: epochs_for(faces), about `steps` optimiser steps
    steps: int = STEPS
    learning_rate: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    class_weights: str = "sqrt"  # none | sqrt | balanced
    augment: Augment = field(default_factory=lambda: AUGMENT)
    seed: int = 0

    def epochs_for(self, faces: int) -> int:
        if self.epochs is not None:
            return self.epochs
        steps_per_epoch = max(1, int(np.ceil(faces / self.batch_size)))
        return int(np.clip(round(self.steps / steps_per_epoch), MIN_EPOCHS, MAX_EPOCHS))

    def describe(self) -> dict:
        return dataclasses.asdict(self) | {"augment": dataclasses.asdict(self.augment)}


@dataclass
class FineTuned:
    model: object
    history: list[dict]  # per epoch: loss, accuracy, learning_rate, seconds
    epochs: int
    seconds: float


def last_dense(model):
    import keras

    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense) or last.get_config().get("activation") != "softmax":
        raise FerlabError(f"{model.name} does not end in a softmax Dense layer, so ferlab cannot fine-tune or cut its outputs.")
    return last


def with_emotions(model, ids: list[int]):
    """A copy of `model` whose outputs are the parent's outputs `ids`, in that order (the same
    last-layer weights for those classes); a plain copy when ids are all outputs in order."""
    import keras

    last = last_dense(model)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    if list(ids) == list(range(last.units)):
        return clone
    kernel, bias = last.get_weights()
    head = keras.layers.Dense(len(ids), activation="softmax", dtype="float32", name=last.name)
    out = head(clone.layers[-2].output)
    cut = keras.Model(clone.input, out, name=model.name)  # one input, as the parent takes it
    head.set_weights([kernel[:, ids], bias[ids]])
    return cut


def _copy(model):
    """The same network and weights, new layers, not compiled (clone_model and model_from_json would compile
    it as `model` is, and the saved .h5 would carry the optimiser)."""
    import keras

    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def class_weights(y: np.ndarray, classes: int, mode: str) -> np.ndarray | None:
    """One weight per class: n / (k n_c) (balanced), its square root (sqrt), or None."""
    if mode == "none":
        return None
    counts = np.bincount(y, minlength=classes).astype(float)
    weights = len(y) / (classes * np.maximum(counts, 1))
    if mode == "sqrt":
        weights = np.sqrt(weights)
    elif mode != "balanced":
        raise ValueError(f"class weights must be none, sqrt or balanced, not {mode!r}")
    return weights


def _trainable(model, layers: str, batch_norm: str) -> None:
    import keras

    if layers not in LAYERS:
        raise FerlabError(f"unknown layers {layers!r}; choose one of {', '.join(LAYERS)}.")
    if batch_norm not in BATCH_NORM:
        raise FerlabError(f"unknown batch_norm {batch_norm!r}; choose one of {', '.join(BATCH_NORM)}.")
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    train = {"all": None, "dense": dense[-2:], "head": dense[-1:]}[layers]
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Keras runs a frozen batch norm in inference mode, on its moving statistics
            layer.trainable = batch_norm == "trained" and train is None
        else:
            layer.trainable = train is None or layer in train


def renormalise(model, x: np.ndarray, batch_size: int = 256) -> None:
    """Re-estimate every batch normalisation's moving mean and variance on uint8 faces x (N, 48, 48): the
    running average over batches of the statistics the network sees in training mode (AdaBN, Li et al. 2016).
    A new camera's brightness, contrast and blur move these statistics first."""
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers or not len(x):
        return
    kept = [layer.momentum for layer in layers]
    faces = contract.normalize(x)
    try:
        for n, start in enumerate(range(0, len(faces), batch_size)):
            for layer in layers:
                layer.momentum = n / (n + 1.0)  # moving = the mean of the batches so far
            model(faces[start : start + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, kept):
            layer.momentum = momentum


def dataset(x: np.ndarray, y: np.ndarray, classes: int, recipe: Recipe, weights: np.ndarray | None):
    """An endless stream of shuffled, augmented batches; the draws depend on the seed and the batch number."""
    import tensorflow as tf

    from ferlab.training import augment

    table = tf.constant(weights, tf.float32) if weights is not None else None
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    ds = ds.shuffle(len(x), seed=recipe.seed, reshuffle_each_iteration=True).batch(recipe.batch_size).repeat().enumerate()

    def prepare(step, batch):
        faces, labels = batch
        faces = tf.cast(faces[..., tf.newaxis], tf.float32) / contract.PIXEL_SCALE
        faces = augment.apply(faces, tf.stack([tf.constant(recipe.seed, tf.int64), step]), recipe.augment)
        targets = tf.one_hot(labels, classes)
        return (faces, targets, tf.gather(table, labels)) if table is not None else (faces, targets)

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def fine_tune(model, x: np.ndarray, y: np.ndarray, recipe: Recipe = Recipe(), print_fn: Callable[[str], None] | None = print) -> FineTuned:
    """A copy of `model` trained on uint8 faces x (N, 48, 48) with labels y (0..k-1, k the model's outputs) by
    `recipe` (`model` itself is left as it was); one line per epoch through print_fn. The same faces, recipe and
    seed give the same weights."""
    import keras

    from ferlab.training import model_io
    from ferlab.training.train import kept_global_state

    classes = int(model.output_shape[-1])
    y = np.asarray(y, dtype=np.int64)
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"labels must be 0..{classes - 1}")
    epochs = recipe.epochs_for(len(x))
    steps = max(1, int(np.ceil(len(x) / recipe.batch_size)))
    history: list[dict] = []
    started = time.monotonic()
    with kept_global_state():
        import tensorflow as tf

        keras.utils.set_random_seed(recipe.seed)
        tf.config.experimental.enable_op_determinism()  # the same faces and seed give the same model (put back after)
        # a copy made after seeding: its dropout layers draw from the seed, not from when the model was built
        model = _copy(model)
        if recipe.batch_norm == "renormalised":
            renormalise(model, x)
        _trainable(model, recipe.layers, recipe.batch_norm)
        schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=max(epochs * steps, 1), alpha=0.01)
        model.compile(
            optimizer=keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
            metrics=["accuracy"],
        )

        class Progress(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.monotonic()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                row = {
                    "epoch": epoch + 1,
                    "loss": float(logs.get("loss", np.nan)),
                    "accuracy": float(logs.get("accuracy", np.nan)),
                    "seconds": round(time.monotonic() - self.started, 1),
                }
                history.append(row)
                if print_fn:
                    print_fn(
                        f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}, accuracy on the augmented training faces "
                        f"{row['accuracy']:.4f} ({row['seconds']:.0f}s)"
                    )

        model.fit(  # epochs 0: nothing trains (what batch normalisation alone does: benchmarks/adapt_recipe.py)
            dataset(x, y, classes, recipe, class_weights(y, classes, recipe.class_weights)),
            epochs=epochs,
            steps_per_epoch=steps,
            callbacks=[Progress()],
            shuffle=False,  # the dataset is shuffled by the seed
            verbose=0,
        )
    # an uncompiled copy, every layer trainable again: nothing of the optimiser is saved with it
    return FineTuned(model_io.as_float32(_copy(model)), history, epochs, round(time.monotonic() - started, 1))
