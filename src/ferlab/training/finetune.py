"""Fine-tuning a trained model on a small labelled set of faces (`ferlab adapt`).

    model = with_emotions(parent, [3, 4, 6])             # a head for happy, sad, neutral: the parent's own columns
    result = fine_tune(model, faces, labels, Recipe())   # labels: 0..k-1 in the model's output order

The recipe is what benchmarks/adapt_recipe.py measured on FER2013 PublicTest faces re-framed and degraded as a
new camera would (docs/inference/adapt.md): every layer trains, batch normalisation stays frozen at the parent's
statistics (a few thousand faces estimate them worse than FER2013's 28,000 did), AdamW at a low rate on a cosine
decay, light augmentation, square-root class weights. The number of epochs follows the set's size (a number of
steps, between MIN_EPOCHS and MAX_EPOCHS), so a small set is not overfitted and a large one is seen enough; no
epoch is chosen on the validation part, which stays an honest judge.

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
    layers: str = "all"
    epochs: int | None = None  # None: epochs_for(faces), about `steps` optimiser steps
    steps: int = STEPS
    learning_rate: float = 3e-4
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
    inputs = clone.inputs
    head = keras.layers.Dense(len(ids), activation="softmax", dtype="float32", name=last.name)
    out = head(clone.layers[-2].output)
    cut = keras.Model(inputs, out, name=model.name)
    head.set_weights([kernel[:, ids], bias[ids]])
    return cut


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


def _trainable(model, layers: str) -> None:
    import keras

    if layers not in LAYERS:
        raise FerlabError(f"unknown layers {layers!r}; choose one of {', '.join(LAYERS)}.")
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    train = {"all": None, "dense": dense[-2:], "head": dense[-1:]}[layers]
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # Keras runs a frozen batch norm in inference mode: the parent's statistics
        else:
            layer.trainable = train is None or layer in train


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
    """Train `model` (changed in place, and returned) on uint8 faces x (N, 48, 48) with labels y
    (0..k-1, k the model's outputs) by `recipe`; one line per epoch through print_fn."""
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
        keras.utils.set_random_seed(recipe.seed)
        _trainable(model, recipe.layers)
        schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=epochs * steps, alpha=0.01)
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

        model.fit(
            dataset(x, y, classes, recipe, class_weights(y, classes, recipe.class_weights)),
            epochs=epochs,
            steps_per_epoch=steps,
            callbacks=[Progress()],
            shuffle=False,  # the dataset is shuffled by the seed
            verbose=0,
        )
    # a fresh, uncompiled copy (clone_model would keep the optimiser, and save it): every layer trainable again
    tuned = keras.models.model_from_json(model.to_json())
    tuned.set_weights(model.get_weights())
    return FineTuned(model_io.as_float32(tuned), history, epochs, round(time.monotonic() - started, 1))
