"""Compact CPU export: TensorFlow Lite (float16 weights), and its accuracy next to the .h5."""

import contextlib
import io
import os

import numpy as np

from ferlab.fileio import atomic_path
from ferlab.image import normalize
from ferlab.labels import NUM_CLASSES


def to_tflite(model, path: str | os.PathLike, quantization: str = "float16") -> None:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization != "none":
        raise ValueError(f"package.tflite must be float16, dynamic or none, not {quantization!r}")
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its whole graph signature
        payload = converter.convert()
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def tflite_predict(path: str | os.PathLike, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities from the TFLite file for uint8 faces (N, 48, 48), on LiteRT as the inference tools run it."""
    from ferlab.classifier import TFLiteClassifier

    if len(faces) == 0:
        return np.zeros((0, NUM_CLASSES), np.float32)
    return TFLiteClassifier(path, batch_size=batch_size)(normalize(faces))
