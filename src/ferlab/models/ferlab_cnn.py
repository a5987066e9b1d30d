"""ferlab's default network: a compact VGG-style CNN with batch normalisation.

Chosen for accuracy per minute of training on a 2-core CPU: four stages of 3x3
convolutions (16, 32, 64, 128 filters), global average pooling instead of a large
dense layer, so it has a seventh of the paper CNN's weights.

The model takes the 48x48 face of the inference contract and looks at its centre
`crop` x `crop` pixels. Training shifts the face by up to (48 - crop) / 2 + a few pixels
(preprocess.augment.translate), so the network learns from shifted crops of each face,
and it costs (crop / 48)^2 of a full-size pass.
"""

import keras
from keras import layers


def _conv(x, filters: int):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def build(input_shape=(48, 48, 1), num_classes=7, widths=(16, 32, 64, 128), depths=(1, 2, 2, 2),
          dense=256, dropout=0.4, crop=44) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    x = inputs
    margin = (input_shape[0] - crop) // 2
    if margin:
        x = layers.Cropping2D(margin, name="centre_crop")(x)
    for width, depth in zip(widths, depths):
        for _ in range(depth):
            x = _conv(x, width)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(dense, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="ferlab_cnn")
