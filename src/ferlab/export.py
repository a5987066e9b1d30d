"""Compact CPU export: TensorFlow Lite (float16 weights), and its accuracy next to the .h5."""

import contextlib
import io
import os
import warnings

import numpy as np

from ferlab.fileio import atomic_path
from ferlab.image import normalize


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
    """Probabilities from the TFLite file for uint8 faces (N, 48, 48)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow as tf

        interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=os.cpu_count())
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for start in range(0, len(faces), batch_size):
        batch = normalize(faces[start:start + batch_size])
        interpreter.resize_tensor_input(inp["index"], list(batch.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], batch)
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(results) if results else np.zeros((0, 7))
