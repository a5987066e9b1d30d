"""Run a .tflite model with LiteRT (`ai-edge-litert`): no TensorFlow import, so a command
that only infers starts in well under a second instead of ~5 s.

A LiteRT interpreter is not thread-safe: `TFLiteModel.run` holds a lock, so one object
can serve several threads (the web service's detection pool, for one).
"""

import os
import threading

import numpy as np

from ferlab.errors import FerlabError
from ferlab.quiet import native_stderr_silenced

_default_threads: int | None = None


def set_default_threads(threads: int | None) -> None:
    """Threads of each interpreter made after this call that names none (None: one per CPU).
    A process-wide setting, like cv2.setNumThreads: `ferlab batch` gives each of its worker
    processes its share of the cores, so they do not fight over them."""
    global _default_threads
    _default_threads = threads


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise FerlabError(
            "running .tflite models needs the `ai-edge-litert` package; run `pip install ai-edge-litert` (it is a ferlab dependency)."
        ) from None
    return Interpreter


class TFLiteModel:
    """One input, several outputs; the batch size follows the input's first axis."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FerlabError(f"no TFLite model at {path}.")
        interpreter_class = _interpreter_class()
        try:
            with native_stderr_silenced():  # its XNNPACK notice
                self._interpreter = interpreter_class(model_path=path, num_threads=threads or _default_threads or os.cpu_count() or 1)
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise FerlabError(f"{path} is not a readable TFLite model ({err}).") from None
        self._input = self._interpreter.get_input_details()[0]
        self.outputs = {o["name"]: o for o in self._interpreter.get_output_details()}
        self.input_shape = tuple(int(v) for v in self._input["shape"])
        self._shape = self.input_shape
        self._lock = threading.Lock()

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Output name -> a copy of that output for the input batch x."""
        x = np.ascontiguousarray(x, dtype=self._input["dtype"])
        with self._lock:
            if x.shape != self._shape:
                self._interpreter.resize_tensor_input(self._input["index"], list(x.shape))
                self._interpreter.allocate_tensors()
                self._shape = x.shape
            self._interpreter.set_tensor(self._input["index"], x)
            self._interpreter.invoke()
            return {name: self._interpreter.get_tensor(o["index"]).copy() for name, o in self.outputs.items()}
