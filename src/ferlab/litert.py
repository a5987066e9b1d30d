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
    """One input, several outputs; the batch size follows the input's first axis.

    content: the model's bytes, read from them instead of the file at `path` (which then only names it)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, content: bytes | None = None):
        path = os.fspath(path)
        if content is None and not os.path.isfile(path):
            raise FerlabError(f"no TFLite model at {path}.")
        interpreter_class = _interpreter_class()
        threads = threads or _default_threads or os.cpu_count() or 1
        try:
            with native_stderr_silenced():  # its XNNPACK notice
                if content is None:
                    self._interpreter = interpreter_class(model_path=path, num_threads=threads)
                else:
                    self._interpreter = interpreter_class(model_content=content, num_threads=threads)
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


def with_penultimate_output(path: str | os.PathLike) -> tuple[bytes, str]:
    """The bytes of the model at `path` with one more output, the penultimate layer's activations
    (the input of the fully connected layer that feeds the softmax), and that output's name. The
    file is not changed; the model runs as before (the same delegate, the same probabilities), the
    added output is only kept instead of thrown away. FerlabError where the model ends otherwise."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    except (OSError, ValueError, IndexError, TypeError) as err:
        raise FerlabError(f"{path} is not a readable TFLite model ({err}).") from None
    graph = model.subgraphs[0]
    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}

    def op_name(op) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")

    producer = {int(t): op for op in graph.operators for t in op.outputs}
    softmax = [op for op in graph.operators if op_name(op) == "SOFTMAX"]
    dense = producer.get(int(softmax[-1].inputs[0])) if softmax else None
    if dense is None or op_name(dense) != "FULLY_CONNECTED":
        raise FerlabError(f"{path} does not end in a fully connected layer and a softmax; its penultimate layer cannot be found.")
    tensor = int(dense.inputs[0])
    graph.outputs = [*graph.outputs, tensor]
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), graph.tensors[tensor].name.decode()
