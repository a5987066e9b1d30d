"""Where a model comes from: a bundle folder, a .h5 or .tflite file, a registered model
(models:/<name>@<alias>) or a model shipped with ferlab (pretrained:<name>), and the one rule
every tool and the Python API follow when none is named (`resolve`)."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ferlab import config
from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.inference.detect import CropContract
from ferlab.lifecycle import pretrained

# A bundle folder (models/bundle, made by the package stage) holds these; only the model is required.
BUNDLE_MODEL = "model.h5"
BUNDLE_TFLITE = "model.tflite"  # the same model for LiteRT: no TensorFlow import
BUNDLE_CONTRACT = "preprocessing.json"  # {"face_margin": 0.1, "align": false, ...}: the crop contract
BUNDLE_LABELS = "labels.json"  # {"emotions": [{"id": 0, "name": "angry"}, ...]}: the outputs, some of ferlab's seven


def missing_model(source) -> FerlabError:
    return FerlabError(
        f"no model at {source}; pass --model pretrained:fast (shipped with ferlab), a bundle folder, a .h5 or .tflite "
        "file, or models:/<name>@<alias>; `dvc repro` trains one and `dvc pull` fetches the team's from its DVC remote."
    )


def bundle_emotions(folder: Path) -> tuple[str, ...]:
    """The emotions a bundle's model answers with, in its output order: labels.json's, which may be
    any of FER2013's seven in any order (`ferlab adapt --emotions`); all seven where there is no labels.json."""
    labels = folder / BUNDLE_LABELS
    if not labels.is_file():
        return EMOTIONS
    try:
        entries = sorted(json.loads(labels.read_text())["emotions"], key=lambda e: int(e["id"]))
        names = tuple(str(e["name"]) for e in entries)
        ids = [int(e["id"]) for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FerlabError(f"the bundle {folder} has an unreadable {BUNDLE_LABELS} ({err}); rebuild it with `dvc repro`.") from None
    unknown = [n for n in names if n not in EMOTIONS]
    if not names or unknown or len(set(names)) != len(names) or ids != list(range(len(names))):
        raise FerlabError(
            f"{labels} lists the emotions {list(names)} with ids {ids}; ferlab's models answer with some of "
            f"{', '.join(EMOTIONS)}, each once, with ids 0, 1, ...; this model was trained for other labels."
        )
    return names


def _bundle_contract(folder: Path) -> CropContract:
    """The crop contract of a bundle (preprocessing.json)."""
    contract = folder / BUNDLE_CONTRACT
    try:
        return CropContract.from_dict(json.loads(contract.read_text())) if contract.is_file() else CropContract()
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FerlabError(f"the bundle {folder} has an unreadable {BUNDLE_CONTRACT} ({err}); rebuild it with `dvc repro`.") from None


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
DEFAULT_RUNTIME = "auto"  # tflite where the model has it, else keras


@dataclass(frozen=True)
class ModelChoice:
    source: str  # what load_model takes
    why: str  # which step of the rule chose it: "--model", "$FERLAB_MODEL", "registry", "checkout", "pretrained"


def production_uri() -> str:
    return f"models:/{config.current().package.registered_model}@production"


def _registry_production(env) -> str | None:
    """models:/<name>@production when a registry is configured (MLFLOW_TRACKING_URI, or this
    project's mlflow.db) and has that alias; a configured registry that cannot be read is an error."""
    from ferlab.lifecycle import registry, tracking

    if tracking.store_missing(tracking.tracking_uri(env)):
        return None
    tracking.connect(env)
    uri = production_uri()
    return uri if registry.find(*registry.parse_uri(uri)) is not None else None


def _local_model() -> str | None:
    """This checkout's bundle (made by the package stage), else its trained .h5."""
    paths = config.current().paths
    if (Path(paths.bundle) / BUNDLE_MODEL).is_file() or (Path(paths.bundle) / BUNDLE_TFLITE).is_file():
        return paths.bundle
    return paths.model if Path(paths.model).is_file() else None


def resolve(model: str | os.PathLike | None = None, env=os.environ) -> ModelChoice:
    """Which model a tool uses: `model` (--model), else $FERLAB_MODEL, else the registry's
    production model, else this checkout's models/bundle (or models/model.h5), else the best
    model shipped with ferlab (pretrained:accurate, else pretrained:fast)."""
    if model:
        return ModelChoice(os.fspath(model), "--model")
    if env.get("FERLAB_MODEL"):
        return ModelChoice(env["FERLAB_MODEL"], "$FERLAB_MODEL")
    production = _registry_production(env)
    if production:
        return ModelChoice(production, "registry")
    local = _local_model()
    if local:
        return ModelChoice(local, "checkout")
    shipped = pretrained.default_uri()
    if shipped:
        return ModelChoice(shipped, "pretrained")
    raise FerlabError(
        "no model: none named (--model, $FERLAB_MODEL), no registry with a production model, no models/bundle "
        "in this folder, and this install ships no pretrained model; run `dvc repro` or reinstall ferlab."
    )


@dataclass(frozen=True)
class ModelFiles:
    """What a model source holds, once found: its .h5 (None: TFLite only), its TFLite file, its bundle
    folder (None: a bare file), its crop contract and the emotions of its outputs."""

    source: str
    h5: Path | None
    tflite: Path | None
    folder: Path | None
    contract: CropContract
    emotions: tuple[str, ...]


def locate(source: str | os.PathLike) -> ModelFiles:
    """The files of a .h5 file, a .tflite file, a bundle folder, models:/<name>@<alias> (downloaded) or
    pretrained:<name>, checked: the folder's labels.json and preprocessing.json read."""
    text = os.fspath(source)
    from ferlab.lifecycle.registry import is_uri

    if pretrained.is_uri(text):  # a shipped model may hold its .h5 beside the TFLite file (what `ferlab adapt` fine-tunes)
        folder = pretrained.verified_folder(text)
        h5 = folder / BUNDLE_MODEL
    elif is_uri(text):
        found = _load_registered(text)
        h5, folder = (None if found.suffix == ".tflite" else found), found.parent
    else:
        path = Path(text)
        if path.is_dir():
            if not (path / BUNDLE_MODEL).is_file() and not (path / BUNDLE_TFLITE).is_file():
                raise FerlabError(
                    f"{path} holds no {BUNDLE_MODEL} or {BUNDLE_TFLITE}; pass a bundle folder made by `dvc repro` "
                    "(models/bundle) or a .h5 file."
                )
            h5, folder = path / BUNDLE_MODEL, path
        elif not path.is_file():
            raise missing_model(path)
        elif path.suffix.lower() == ".tflite":
            return ModelFiles(text, None, path, None, CropContract(), EMOTIONS)
        else:
            h5, folder = path, None
    if folder is None:
        return ModelFiles(text, h5, None, None, CropContract(), EMOTIONS)
    tflite = folder / BUNDLE_TFLITE
    return ModelFiles(
        text,
        h5 if h5 is not None and h5.is_file() else None,
        tflite if tflite.is_file() else None,
        folder,
        _bundle_contract(folder),
        bundle_emotions(folder),
    )


def load_model(source: str | os.PathLike, runtime: str = DEFAULT_RUNTIME):
    """(classifier, CropContract) from a .h5 file, a .tflite file, a bundle folder or models:/<name>@<alias>;
    the classifier's `emotions` are its outputs' (a bundle's labels.json, else FER2013's seven).

    runtime: "tflite" runs the bundle's model.tflite on LiteRT, "keras" the .h5 on TensorFlow;
    "auto" takes the TFLite model where the source has one.
    """
    from ferlab.inference.classifier import KerasClassifier, TFLiteClassifier
    from ferlab.training.model_io import load_h5

    if runtime not in RUNTIMES:
        raise FerlabError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}.")
    found = locate(source)
    text = found.source
    if found.folder is None and found.tflite is not None:  # a bare .tflite file
        if runtime == "keras":
            raise FerlabError(f"{text} is a TFLite model; the keras runtime needs a .h5 file or a bundle folder.")
        return TFLiteClassifier(found.tflite), found.contract
    if runtime == "tflite" and found.tflite is None:
        raise FerlabError(
            f"{text} has no {BUNDLE_TFLITE}; pass a bundle folder made by `dvc repro` (models/bundle), or use --runtime keras."
        )
    if runtime != "keras" and found.tflite is not None:
        return TFLiteClassifier(found.tflite, emotions=found.emotions), found.contract
    if found.h5 is None:
        raise FerlabError(f"{text} holds only a TFLite model; the keras runtime needs a .h5 file, use --runtime tflite or auto.")
    return KerasClassifier(load_h5(found.h5), emotions=found.emotions), found.contract


def label(source: str) -> str:
    """How the tools name the model that answered: the source, with the version for a registered model."""
    from ferlab.lifecycle import registry

    if not registry.is_uri(source):
        return source
    name, alias = registry.parse_uri(source)
    version = registry.by_alias(name, alias)
    return f"{source} (version {version.version})" if version else source
