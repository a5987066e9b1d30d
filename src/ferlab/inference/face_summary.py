"""What a face looked like to the model, in a few numbers and never its pixels: the summaries that
the service's face log keeps (ferlab.serve.face_log) and that `ferlab monitor` compares with the
same summaries of FER2013's PrivateTest (ferlab.serve.drift). Both go through `summarize`, so the
production rows and the reference rows are made by the same code.

One face's summary (a JSON object, one line of the face log):

    {
      "time": "2026-12-07T10:15:02.118+00:00",   # when it was classified (UTC)
      "model": "pretrained:fast",                # the model version that classified it, or null
      "emotion": "happy",                        # the most probable emotion
      "top_probability": 0.912,
      "probabilities": {"angry": 0.01, ...},     # the model's emotions (FER2013's 7, or those of an adapted model), its order
      "face_size": 112,                          # the detector's box, its longer side in pixels
      "brightness": 121.4,                       # the 48x48 crop the model saw: mean grey level, 0 to 255
      "sharpness": 231.0,                        # the crop's variance of the Laplacian (blur lowers it)
      "embedding": [0.41, -1.2, ...]             # EMBEDDING_DIM numbers: the penultimate layer, projected; null without
    }

The embedding is the penultimate layer of the classifier (the input of its last dense layer: 256
numbers for ferlab_cnn) for the face alone, without test-time augmentation, projected onto
EMBEDDING_DIM fixed random directions (a Johnson-Lindenstrauss projection: distances between faces
are kept within a few percent, and a line stays short). `Penultimate.of` gets it from either
runtime with a model object of its own, never the one that classifies (a Keras model must not be
called from two threads at once; a LiteRT interpreter is not thread-safe):
- LiteRT (.tflite): the same model read with that layer added to its outputs
  (ferlab.litert.with_penultimate_output); the file is not changed, the int8 activations are
  dequantized.
- Keras (.h5): a copy of the model cut after that layer, traced as one graph.
A classifier of neither kind (a bare function) has no embedding: `embedding` is null.
"""

import math
import os
from datetime import datetime, timezone

import numpy as np

from ferlab.contract import EMOTIONS, IMAGE_SIZE, normalize

EMBEDDING_DIM = 32
PROJECTION_SEED = 20261207  # the projection is part of the log's format: changing it invalidates logs and references
SUMMARY_VERSION = 1  # bumped when a summary changes meaning; part of a cached reference's key
NUMERIC = ("top_probability", "brightness", "sharpness", "face_size")  # the scalar fields besides the probabilities


def brightness(crops: np.ndarray) -> np.ndarray:
    """(N, 48, 48) uint8 -> (N,) mean grey level, 0 to 255."""
    return crops.reshape(len(crops), -1).mean(axis=1) if len(crops) else np.zeros(0)


def sharpness(crops: np.ndarray) -> np.ndarray:
    """(N, 48, 48) uint8 -> (N,) variance of the Laplacian (3x3, borders reflected): high for crisp
    edges, low for a blurred or flat face. On all crops at once, no OpenCV call per face."""
    if not len(crops):
        return np.zeros(0)
    x = np.pad(crops.astype(np.float32), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    laplacian = x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:] - 4 * x[:, 1:-1, 1:-1]
    return laplacian.reshape(len(crops), -1).var(axis=1)


def projection(width: int) -> np.ndarray:
    """The fixed (width, EMBEDDING_DIM) projection of a penultimate layer of that width."""
    rng = np.random.default_rng([PROJECTION_SEED, width])
    return (rng.standard_normal((width, EMBEDDING_DIM)) / math.sqrt(EMBEDDING_DIM)).astype(np.float32)


class Penultimate:
    """crops -> (N, EMBEDDING_DIM) float32 embeddings, with a model object of its own."""

    def __init__(self, run, width: int, runtime: str):
        self._run = run  # normalised (N, 48, 48, 1) float32 -> (N, width) float32
        self.width = width
        self.runtime = runtime
        self._projection = projection(width)

    @classmethod
    def of(cls, classifier) -> "Penultimate | None":
        """For a recognizer's classifier (TFLiteClassifier or KerasClassifier); None for any other
        (FerlabError where the model has no final dense layer and softmax)."""
        from ferlab.inference.classifier import KerasClassifier, TFLiteClassifier

        if isinstance(classifier, TFLiteClassifier):
            return cls._tflite(classifier.path)
        if isinstance(classifier, KerasClassifier):
            return cls._keras(classifier.model)
        return None

    @classmethod
    def _tflite(cls, path: str | os.PathLike) -> "Penultimate":
        from ferlab.litert import TFLiteModel, with_penultimate_output

        content, name = with_penultimate_output(path)
        model = TFLiteModel(path, threads=1, content=content)  # one core: the service's own model has the others
        detail = model.outputs[name]
        scale, zero = detail["quantization"]
        width = int(detail["shape"][-1])

        def run(x: np.ndarray) -> np.ndarray:
            out = model.run(x)[name]
            return (out.astype(np.float32) - zero) * scale if scale else out.astype(np.float32)

        return cls(run, width, "tflite")

    @classmethod
    def _keras(cls, model) -> "Penultimate":
        import keras

        from ferlab.errors import FerlabError
        from ferlab.quiet import import_tensorflow

        tf = import_tensorflow()
        own = keras.models.clone_model(model)
        own.set_weights(model.get_weights())
        dense = [layer for layer in own.layers if isinstance(layer, keras.layers.Dense)]
        if not dense:
            raise FerlabError(f"the Keras model {model.name} has no dense layer; its penultimate layer cannot be found.")
        cut = keras.Model(own.input, dense[-1].input)
        width = int(cut.output.shape[-1])
        spec = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32)
        traced = tf.function(lambda x: cut(x, training=False), input_signature=[spec])
        return cls(lambda x: traced(x).numpy().astype(np.float32), width, "keras")

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        if not len(crops):
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        return self._run(normalize(crops)) @ self._projection


def summarize(
    boxes: list[tuple[int, int, int, int]],
    crops: np.ndarray,
    probabilities: np.ndarray,
    model: str | None,
    embedder: Penultimate | None = None,
    when: datetime | None = None,
    emotions: tuple[str, ...] = EMOTIONS,
) -> list[dict]:
    """The summaries of the faces of one image (or of any set of faces): their boxes (x, y, w, h),
    their (N, 48, 48) uint8 crops as classified and their (N, k) probabilities, one column for each
    of `emotions` (the recognizer's `emotions`)."""
    if not len(crops):
        return []
    if np.shape(probabilities)[-1] != len(emotions):
        raise ValueError(f"{np.shape(probabilities)[-1]} probabilities per face for the {len(emotions)} emotions {', '.join(emotions)}")
    stamp = (when or datetime.now(timezone.utc)).isoformat(timespec="milliseconds")
    embeddings = embedder(crops) if embedder is not None else None
    light, sharp = brightness(crops), sharpness(crops)
    rows = []
    for i, p in enumerate(np.asarray(probabilities, dtype=np.float64)):
        top = int(p.argmax())
        rows.append(
            {
                "time": stamp,
                "model": model,
                "emotion": emotions[top],
                "top_probability": round(float(p[top]), 5),
                "probabilities": {e: round(float(v), 5) for e, v in zip(emotions, p)},
                "face_size": int(max(boxes[i][2], boxes[i][3])),
                "brightness": round(float(light[i]), 2),
                "sharpness": round(float(sharp[i]), 2),
                "embedding": None if embeddings is None else [round(float(v), 4) for v in embeddings[i]],
            }
        )
    return rows
