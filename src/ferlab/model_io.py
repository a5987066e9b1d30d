"""Saving and loading the .h5 model, and its MLflow signature."""

import os
from pathlib import Path

from ferlab.errors import FerlabError
from ferlab.fileio import atomic_path
from ferlab.image import IMAGE_SIZE
from ferlab.labels import NUM_CLASSES


def save_h5(model, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)  # the .h5 suffix selects Keras' HDF5 format, as the paper deploys


def load_h5(path: str | os.PathLike):
    import keras

    path = Path(path)
    if not path.is_file():
        raise FerlabError(f"no model at {path}; run `dvc repro` to train one.")
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as err:
        raise FerlabError(f"{path} is not a readable Keras model ({err}); run `dvc repro -f train`.") from None


def signature():
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, IMAGE_SIZE, IMAGE_SIZE, 1), "faces")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, NUM_CLASSES), "probabilities")]),
    )
