"""The emotion classifier behind EmotionRecognizer: (N, 48, 48, 1) float32 -> (N, k) probabilities, one
column per emotion of `classifier.emotions` (FER2013's seven, or the subset a bundle's labels.json declares).

Two runtimes, the same numbers within float16 rounding (package stage: TFLite 0.6144 against
.h5 0.6141 on PrivateTest):
- `KerasClassifier`: a Keras model as one traced graph. Needs TensorFlow (~5 s to import).
- `TFLiteClassifier`: the bundle's model.tflite on LiteRT. No TensorFlow import; about
  1 ms per face at batch 1 on the 2-core CPU, against 3.3 ms for the traced Keras graph.
"""

import os

import numpy as np

from ferlab.contract import EMOTIONS, IMAGE_SIZE
from ferlab.errors import FerlabError


class KerasClassifier:
    runtime = "keras"

    def __init__(self, model, batch_size: int = 1024, emotions: tuple[str, ...] = EMOTIONS):
        from ferlab.quiet import import_tensorflow

        tf = import_tensorflow()
        outputs = model.output_shape[-1] if hasattr(model, "output_shape") else len(emotions)
        if outputs != len(emotions):
            raise FerlabError(
                f"the model {getattr(model, 'name', '')} gives {outputs} probabilities, not one for each of {', '.join(emotions)}; "
                "load it from a bundle folder whose labels.json names its emotions."
            )
        self.model = model
        self.batch_size = batch_size
        self.emotions = tuple(emotions)
        # Keras predict() costs ~90 ms per call in overhead; a traced function ~3 ms (one face, 2 cores).
        spec = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32)
        self._infer = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        parts = [self._infer(x[i : i + self.batch_size]).numpy() for i in range(0, len(x), self.batch_size)]
        return np.concatenate(parts).astype(np.float32)


class TFLiteClassifier:
    runtime = "tflite"

    def __init__(self, path: str | os.PathLike, batch_size: int = 256, threads: int | None = None, emotions: tuple[str, ...] = EMOTIONS):
        from ferlab.litert import TFLiteModel

        self.path = os.fspath(path)
        self.batch_size = batch_size
        self.emotions = tuple(emotions)
        self._model = TFLiteModel(path, threads)
        outputs = [tuple(o["shape"]) for o in self._model.outputs.values()]
        if self._model.input_shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1) or len(outputs) != 1 or outputs[0][-1] != len(emotions):
            raise FerlabError(
                f"{path} takes {self._model.input_shape} and gives {' and '.join(str(o[-1]) for o in outputs) or 'no'} "
                f"probabilities; an emotion model takes (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1) and gives {len(emotions)} "
                f"({', '.join(emotions)}; a bundle's labels.json names them)."
            )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        parts = [next(iter(self._model.run(x[i : i + self.batch_size]).values())) for i in range(0, len(x), self.batch_size)]
        return np.concatenate(parts).astype(np.float32)


def as_classifier(model, emotions: tuple[str, ...] = EMOTIONS):
    """A Keras model wrapped in KerasClassifier (its outputs named `emotions`); a classifier (any
    callable from float32 faces to probabilities, FER2013's seven unless it has `emotions`) as it is."""
    return KerasClassifier(model, emotions=emotions) if hasattr(model, "count_params") else model
