"""The pretrained models that ship inside the package: `pretrained:accurate` and `pretrained:fast`.

Each lives in `shipped/<name>/` as a bundle without the .h5: `model.tflite`, `labels.json`,
`preprocessing.json`, `MODEL_CARD.md`, and `card.json` (the figures, the provenance and the
SHA-256 of every other file). The files are checked against those checksums before a model is
used, so a damaged install fails with one sentence instead of giving wrong emotions.
`ferlab models ship` (ferlab.lifecycle.shipping) writes these folders from a finished training.
"""

import json
from pathlib import Path

from ferlab.errors import FerlabError
from ferlab.fileio import sha256_of

PREFIX = "pretrained:"
NAMES = ("accurate", "fast")  # the preferred default first
SHIPPED = Path(__file__).parent / "shipped"
CARD = "card.json"

_verified: set[Path] = set()


def is_uri(source) -> bool:
    return str(source).startswith(PREFIX)


def folder_of(name: str, root: Path | None = None) -> Path:
    return (root or SHIPPED) / name


def available(root: Path | None = None) -> list[str]:
    """The names of the models this install ships, the preferred default first."""
    return [name for name in NAMES if (folder_of(name, root) / CARD).is_file()]


def default_uri(root: Path | None = None) -> str | None:
    """pretrained:<the best shipped model>, or None when this install ships none."""
    found = available(root)
    return PREFIX + found[0] if found else None


def name_of(uri: str, root: Path | None = None) -> str:
    """pretrained:<name> -> name, for a model this install ships."""
    name = str(uri).removeprefix(PREFIX)
    if name not in NAMES:
        raise FerlabError(f"{uri} is not a pretrained model; ferlab ships {', '.join(PREFIX + n for n in NAMES)}.")
    if name not in available(root):
        shipped = ", ".join(PREFIX + n for n in available(root)) or "none"
        raise FerlabError(f"{uri} is not shipped in this version of ferlab (shipped: {shipped}).")
    return name


def card(name: str, root: Path | None = None) -> dict:
    path = folder_of(name, root) / CARD
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FerlabError(f"the card of {PREFIX}{name} ({path}) is unreadable ({err}); reinstall ferlab.") from None


def verified_folder(uri: str, root: Path | None = None) -> Path:
    """The folder of a shipped model after checking each of its files against its card."""
    name = name_of(uri, root)
    folder = folder_of(name, root)
    if folder in _verified:
        return folder
    for file, expected in card(name, root)["files"].items():
        path = folder / file
        if not path.is_file():
            raise FerlabError(f"{PREFIX}{name} is missing {file} ({path}); reinstall ferlab.")
        if sha256_of(path) != expected:
            raise FerlabError(f"{path} does not match its SHA-256 in {CARD}; the install is damaged, reinstall ferlab.")
    _verified.add(folder)
    return folder


def register(uri: str, registered_model: str, experiment: str, root: Path | None = None):
    """A new version of `registered_model` holding the shipped model (alias `candidate`), tagged
    with its card's PrivateTest figures so that `ferlab models promote` gates against it like
    any version the package stage registers. Returns the registry's VersionInfo."""
    from ferlab.lifecycle import pyfunc, registry, tracking

    folder = verified_folder(uri, root)
    about = card(name_of(uri, root), root)
    test, training = about["privatetest"], about["training"]
    tracker = tracking.RunTracker(experiment, tags={"source": uri, "pretrained_version": about["version"]})
    tracker.start()
    tracker.set_tags({"mlflow.runName": f"import {uri}"})
    tracker.log_metrics(
        {f"test_{mode}_{k}": test[mode][k] for mode in ("none", "flip", "ten_crop") for k in ("accuracy", "macro_f1", "ece")}
    )
    extra = {file: str(folder / file) for file in ("preprocessing.json", "labels.json", "MODEL_CARD.md", CARD)}
    info = pyfunc.log_model("emotion_model", folder / "model.tflite", extra)
    tracker.end()
    return registry.register(
        registered_model,
        info.model_uri,
        tags={
            "test_accuracy": f"{test['none']['accuracy']:.4f}",
            "test_macro_f1": f"{test['none']['macro_f1']:.4f}",
            "test_accuracy_flip": f"{test['flip']['accuracy']:.4f}",
            "test_ece": f"{test['flip']['ece']:.4f}",
            "tflite_accuracy": f"{test['none']['accuracy']:.4f}",
            "data_sha256": about["data"]["table_sha256"],
            "git_commit": training["git_commit"],
            "architecture": about["architecture"],
            "source": uri,
            "pretrained_version": about["version"],
            "model_sha256": about["files"]["model.tflite"],
        },
        run_id=tracker.run_id,
    )
