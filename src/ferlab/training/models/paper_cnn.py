"""The seed paper's network, layer for layer (its Table 2: 2,489,095 parameters).

Only the first convolution pads ("same"); the others are "valid", which is what makes
the paper's shapes (48 -> 46 -> 23 -> 21 -> 10 -> 8 -> 4) and its parameter count.
"""

import keras
from keras import layers


def build(input_shape=(48, 48, 1), num_classes=7, dropout_conv=0.1, dropout_dense=0.2) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(dropout_conv),
            layers.Conv2D(128, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(dropout_conv),
            layers.Conv2D(256, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(dropout_conv),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dropout(dropout_dense),
            # float32 softmax even under a mixed-precision policy
            layers.Dense(num_classes, activation="softmax", dtype="float32"),
        ],
        name="paper_cnn",
    )
