"""Where a model comes from: a bundle folder, a .h5 or .tflite file, or a registered model
(models:/<name>@<alias>), and the default one of the project (config.current)."""

import json
import os
from pathlib import Path

from ferlab import config
from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.inference.detect import CropContract

# A bundle folder (models/bundle, made by the package stage) holds these; only the model is required.
BUNDLE_MODEL = "model.h5"
BUNDLE_TFLITE = "model.tflite"  # the same model for LiteRT: no TensorFlow import
BUNDLE_CONTRACT = "preprocessing.json"  # {"face_margin": 0.1, "align": false, ...}: the crop contract
BUNDLE_LABELS = "labels.json"  # {"emotions": [{"id": 0, "name": "angry"}, ...]}: must be ferlab's


def missing_model(source) -> FerlabError:
    return FerlabError(
        f"no model at {source}; run `dvc repro` to train one, or promote a registered model "
        "and pass --model models:/<name>@<alias> (or a .h5 file, or a bundle folder); `dvc pull` fetches the team's from its DVC remote."
    )


def _bundle_contract(folder: Path) -> CropContract:
    """The crop contract of a bundle (preprocessing.json), after checking its labels (labels.json)."""
    labels = folder / BUNDLE_LABELS
    contract = folder / BUNDLE_CONTRACT
    try:
        if labels.is_file():
            names = [e["name"] for e in json.loads(labels.read_text())["emotions"]]
            if tuple(names) != EMOTIONS:
                raise FerlabError(
                    f"{labels} lists the emotions {names}, not ferlab's {list(EMOTIONS)}; this model was trained for other labels."
                )
        return CropContract.from_dict(json.loads(contract.read_text())) if contract.is_file() else CropContract()
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FerlabError(
            f"the bundle {folder} has an unreadable {BUNDLE_LABELS} or {BUNDLE_CONTRACT} ({err}); rebuild it with `dvc repro`."
        ) from None


def _load_registered(uri: str):
    from ferlab.lifecycle import registry, tracking

    name, alias = registry.parse_uri(uri)
    if tracking.connect() is None:
        raise FerlabError(
            f"cannot resolve {uri}: there is no MLflow registry at {tracking.tracking_uri()}; run `dvc repro` and "
            "`ferlab models promote` in the project, set MLFLOW_TRACKING_URI, or pass --model with a .h5 file."
        )
    return Path(registry.local_model_file(name, alias))


RUNTIMES = ("auto", "tflite", "keras")


def default_model() -> str:
    """The bundle folder when the package stage made one (its TFLite model loads without
    TensorFlow), else the trained .h5."""
    paths = config.current().paths
    return paths.bundle if (Path(paths.bundle) / BUNDLE_MODEL).is_file() else paths.model


def load_model(source: str | os.PathLike, runtime: str = "auto"):
    """(classifier, CropContract) from a .h5 file, a .tflite file, a bundle folder or models:/<name>@<alias>.

    runtime: "tflite" runs the bundle's model.tflite on LiteRT, "keras" the .h5 on TensorFlow;
    "auto" takes the TFLite model where the source has one.
    """
    from ferlab.inference.classifier import KerasClassifier, TFLiteClassifier
    from ferlab.training.model_io import load_h5

    if runtime not in RUNTIMES:
        raise FerlabError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}.")
    text = os.fspath(source)
    from ferlab.lifecycle.registry import is_uri

    if is_uri(text):
        h5 = _load_registered(text)
        folder = h5.parent
    else:
        path = Path(text)
        if path.is_dir():
            if not (path / BUNDLE_MODEL).is_file():
                raise FerlabError(
                    f"{path} holds no {BUNDLE_MODEL}; pass a bundle folder made by `dvc repro` (models/bundle) or a .h5 file."
                )
            h5, folder = path / BUNDLE_MODEL, path
        elif not path.is_file():
            raise missing_model(path)
        elif path.suffix.lower() == ".tflite":
            if runtime == "keras":
                raise FerlabError(f"{path} is a TFLite model; the keras runtime needs a .h5 file or a bundle folder.")
            return TFLiteClassifier(path), CropContract()
        else:
            h5, folder = path, None
    contract = _bundle_contract(folder) if folder is not None else CropContract()
    tflite = folder / BUNDLE_TFLITE if folder is not None else None
    if runtime == "tflite" and not (tflite and tflite.is_file()):
        raise FerlabError(
            f"{text} has no {BUNDLE_TFLITE}; pass a bundle folder made by `dvc repro` (models/bundle), or use --runtime keras."
        )
    if runtime != "keras" and tflite is not None and tflite.is_file():
        return TFLiteClassifier(tflite), contract
    return KerasClassifier(load_h5(h5)), contract
