"""Compact CPU export: TensorFlow Lite, float16 weights (the package stage's) or full-integer int8
(the shipped models', where it keeps the accuracy). The package stage checks its accuracy
against the .h5 with the runtime that inference uses (ferlab.inference.classifier)."""

import contextlib
import io
import os
import warnings

from ferlab.fileio import atomic_path
from ferlab.quiet import native_stderr_silenced


def to_tflite(model, path: str | os.PathLike, quantization: str = "float16", representative=None) -> None:
    """representative: for int8, model inputs (N, 48, 48, 1) float32 that set the activations' ranges."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "int8":  # weights and activations in int8; the input and output stay float32
        if representative is None:
            raise ValueError("int8 quantization needs representative inputs")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([representative[i : i + 1]] for i in range(len(representative)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization != "none":
        raise ValueError(f"package.tflite must be float16, dynamic or none, not {quantization!r}")  # int8: shipped models only
    # the converter prints its whole graph signature, and the int8 calibrator its settings and a warning
    with contextlib.redirect_stdout(io.StringIO()), native_stderr_silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        payload = converter.convert()
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
