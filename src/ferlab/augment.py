"""On-the-fly augmentation from the params.yaml policy, as Keras preprocessing layers.

The layers take normalised faces (N, 48, 48, 1) in [0, 1] and are active only in
training mode, so the same object serves the tf.data pipeline and the sample sheet.
"""

import dataclasses

import keras
from keras import layers

from ferlab.params import Augment


def build(policy: Augment, seed: int) -> keras.Sequential:
    steps = []
    if policy.horizontal_flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed))
    if policy.rotation_degrees:
        steps.append(layers.RandomRotation(policy.rotation_degrees / 360.0, fill_mode="reflect", seed=seed + 1))
    if policy.zoom:
        steps.append(layers.RandomZoom(policy.zoom, policy.zoom, fill_mode="reflect", seed=seed + 2))
    if policy.shift:
        steps.append(layers.RandomTranslation(policy.shift, policy.shift, fill_mode="reflect", seed=seed + 3))
    if policy.brightness:
        steps.append(layers.RandomBrightness(policy.brightness, value_range=(0.0, 1.0), seed=seed + 4))
    if policy.contrast:
        steps.append(layers.RandomContrast(policy.contrast, value_range=(0.0, 1.0), seed=seed + 5))
    return keras.Sequential(steps, name="augment")


def describe(policy: Augment) -> dict:
    """The resolved policy as written to reports/: every setting and the layer it becomes."""
    return {"settings": dataclasses.asdict(policy), "layers": [l.name for l in build(policy, 0).layers]}
