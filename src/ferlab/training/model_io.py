"""Saving and loading the .h5 model (float32 whatever trained it; loaded without compiling)."""

import os
from pathlib import Path

from ferlab.errors import FerlabError
from ferlab.fileio import atomic_path
from ferlab.quiet import import_tensorflow


def save_h5(model, path: str | os.PathLike) -> None:
    import_tensorflow()
    from ferlab.training.batch_norm import portable

    with atomic_path(path) as tmp:
        portable(model).save(tmp)  # the .h5 suffix selects Keras' HDF5 format, as the paper deploys


def as_float32(model):
    """The same network and weights computing in float32: a model trained under a mixed
    policy (bfloat16 on a CPU, float16 on a GPU) otherwise keeps that policy in its file,
    which the TFLite converter and CPUs without bf16 cannot run. Layers that exist for training
    speed become their plain Keras equivalents (batch_norm.portable)."""
    import keras

    from ferlab.training.batch_norm import portable

    model = portable(model)
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model

    def float32_layer(layer):
        return layer.__class__.from_config(layer.get_config() | {"dtype": "float32"})

    clone = keras.models.clone_model(model, clone_function=float32_layer)
    clone.set_weights([w.astype("float32") for w in model.get_weights()])
    return clone


def load_h5(path: str | os.PathLike):
    import_tensorflow()
    import keras

    path = Path(path)
    if not path.is_file():
        raise FerlabError(f"no model at {path}; run `dvc repro` to train one.")
    try:
        model = keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as err:
        raise FerlabError(f"{path} is not a readable Keras model ({err}); run `dvc repro -f train`.") from None
    return as_float32(model)
