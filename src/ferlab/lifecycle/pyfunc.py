"""The registered MLflow model: a pyfunc that takes faces and returns a probability per emotion.

Input: grey faces as a float32 tensor (N, 48, 48) of grey levels 0..255 (FER2013 pixels,
or crops made by ferlab's detector). Output: a DataFrame with one column per emotion
(in ferlab.contract order, or the order of the labels.json logged with the model: a model adapted
to fewer emotions) and `emotion`, the most likely one.
"""

import contextlib
import io
import json

import mlflow.pyfunc
import numpy as np
import pandas as pd

from ferlab.contract import EMOTIONS, IMAGE_SIZE, normalize

MODEL_ARTIFACT = "keras_h5"
TFLITE_ARTIFACT = "tflite"  # a model registered from its TFLite file alone (`ferlab models import pretrained:...`)
LABELS_ARTIFACT = "labels.json"  # the bundle's labels.json, logged with the model: the emotions of its outputs
REQUIREMENTS = ("tensorflow", "keras", "numpy", "pandas", "opencv-python-headless", "pyyaml")


def pinned_requirements() -> list[str]:
    """The versions in use here, so `mlflow models serve` builds the environment the model was tested in."""
    from importlib.metadata import PackageNotFoundError, version

    def pin(name: str) -> str:
        try:
            return f"{name}=={version(name)}"
        except PackageNotFoundError:
            return name

    return [pin(name) for name in REQUIREMENTS]


def signature(emotions: tuple[str, ...] = EMOTIONS):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, IMAGE_SIZE, IMAGE_SIZE))]),
        outputs=Schema([*(ColSpec("double", e) for e in emotions), ColSpec("string", "emotion")]),
    )


def emotions_of(labels_file) -> tuple[str, ...]:
    """The emotions a labels.json names, in id order; FER2013's seven where there is none."""
    from pathlib import Path

    if not labels_file or not Path(labels_file).is_file():
        return EMOTIONS
    entries = sorted(json.loads(Path(labels_file).read_text())["emotions"], key=lambda e: int(e["id"]))
    return tuple(str(e["name"]) for e in entries)


def faces_array(model_input) -> np.ndarray:
    """Accept (N, 48, 48), (N, 48, 48, 1) or (N, 2304) grey levels, as arrays, lists or DataFrames."""
    x = model_input.to_numpy() if isinstance(model_input, pd.DataFrame) else np.asarray(model_input)
    x = x.astype(np.float32)
    if x.ndim == 2 and x.shape[1] == IMAGE_SIZE * IMAGE_SIZE:
        x = x.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected grey faces of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {x.shape}")
    return x


def probabilities_frame(probs: np.ndarray, emotions: tuple[str, ...] = EMOTIONS) -> pd.DataFrame:
    frame = pd.DataFrame(np.asarray(probs, dtype=np.float64), columns=list(emotions))
    frame["emotion"] = [emotions[i] for i in np.argmax(probs, axis=1)]
    return frame


# MLflow warns, when the class is defined, that `predict` has no type hints, and resets the
# warning filters to do so; the signature (faces in, a probability per emotion out) is what
# describes the model here, so its advice is dropped.
with contextlib.redirect_stderr(io.StringIO()):

    class EmotionModel(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            self.emotions = emotions_of(context.artifacts.get(LABELS_ARTIFACT))
            if MODEL_ARTIFACT in context.artifacts:
                from ferlab.training.model_io import load_h5

                model = load_h5(context.artifacts[MODEL_ARTIFACT])
                self.classify = lambda x: model.predict(x, batch_size=256, verbose=0)
            else:
                from ferlab.litert import TFLiteModel

                model = TFLiteModel(context.artifacts[TFLITE_ARTIFACT])
                self.classify = lambda x: next(iter(model.run(x).values()))

        def predict(self, context, model_input, params=None):
            faces = faces_array(model_input)
            emotions = getattr(self, "emotions", EMOTIONS)
            probs = self.classify(normalize(faces)) if len(faces) else np.zeros((0, len(emotions)))
            return probabilities_frame(probs, emotions)


def log_model(name: str, model_file, extra_files: dict[str, str] | None = None):
    """Log the model (a .h5, or a .tflite alone), in the active MLflow run (a RunTracker's), as
    MLflow serves and registers it: this pyfunc, grey faces 0..255 in, a probability per emotion
    out; `extra_files` are further artifacts. Returns MLflow's ModelInfo."""
    from pathlib import Path

    key = TFLITE_ARTIFACT if Path(model_file).suffix == ".tflite" else MODEL_ARTIFACT
    extra_files = extra_files or {}
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=EmotionModel(),
        artifacts={key: str(model_file), **extra_files},
        code_paths=[str(Path(__file__).parents[1])],  # the ferlab package, so the model loads where ferlab is not installed
        signature=signature(emotions_of(extra_files.get(LABELS_ARTIFACT))),
        pip_requirements=pinned_requirements(),
    )
