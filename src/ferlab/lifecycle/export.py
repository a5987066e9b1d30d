"""Compact CPU export: TensorFlow Lite (float16 weights). The package stage checks its accuracy
against the .h5 with the runtime that inference uses (ferlab.inference.classifier)."""

import contextlib
import io
import os

from ferlab.fileio import atomic_path


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
