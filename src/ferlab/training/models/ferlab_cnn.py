"""ferlab's default network: a compact VGG-style CNN with batch normalisation.

Four stages of 3x3 convolutions (24, 48, 96, 192 filters), global average pooling
instead of a large dense layer: 707,391 weights, under a third of the paper CNN's. Chosen
on PublicTest among the recipe trials in reports/recipe_trials.md: at 45 epochs it beats
the 16..128 version (327,127 weights) by 2 points, for about 1.8x the compute per epoch.

The model takes the 48x48 face of the inference contract and looks at its centre
`crop` x `crop` pixels. Training shifts the face by up to (48 - crop) / 2 + a few pixels
(preprocess.augment.translate), so the network learns from shifted crops of each face,
and it costs (crop / 48)^2 of a full-size pass.
"""

import keras
from keras import layers

from ferlab.training.batch_norm import FusedBatchNormalization


def _conv(x, filters: int):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = FusedBatchNormalization()(x)
    return layers.Activation("relu")(x)


def build(
    input_shape=(48, 48, 1),
    num_classes=7,
    widths=(24, 48, 96, 192),
    depths=(1, 2, 2, 2),
    dense=256,
    dropout=0.2,
    crop=44,
    final_pool=True,
) -> keras.Model:
    """dropout: before and after the dense layer of the head (0.2 beat 0.4 by 1.9 points of
    PublicTest at 45 epochs, trial `drop20`).
    final_pool: max-pool the last stage before the global average. A 2x2 pool of an odd-sized
    map drops its last row and column: at crop 44 the last stage's 5x5 map becomes 2x2, and the
    bottom and right fifth of the face reach the classifier only through the neighbouring cells."""
    inputs = keras.Input(shape=input_shape)
    x = inputs
    margin = (input_shape[0] - crop) // 2
    if margin:
        x = layers.Cropping2D(margin, name="centre_crop")(x)
    for stage, (width, depth) in enumerate(zip(widths, depths), 1):
        for _ in range(depth):
            x = _conv(x, width)
        if stage < len(widths) or final_pool:
            x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(dense, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="ferlab_cnn")
