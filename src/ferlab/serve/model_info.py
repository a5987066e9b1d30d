"""Which model `ferlab serve` serves by default, and what GET /v1/model says about it."""

import json
import os
import re
from pathlib import Path

from ferlab import config
from ferlab.errors import FerlabError


def production_uri() -> str:
    return f"models:/{config.current().package.registered_model}@production"


def _registry_has(uri: str) -> bool:
    """Whether the MLflow registry (the project's mlflow.db, or MLFLOW_TRACKING_URI) has this alias."""
    from ferlab.lifecycle import registry, tracking

    if tracking.connect() is None:
        return False
    name, alias = registry.parse_uri(uri)
    try:
        return registry.by_alias(name, alias) is not None
    except FerlabError:  # no such registered model, or the server is unreachable
        return False


def default_source(env=os.environ) -> str:
    """$FERLAB_MODEL, else the registry's production model, else models/bundle, else models/model.h5."""
    if env.get("FERLAB_MODEL"):
        return env["FERLAB_MODEL"]
    production = production_uri()
    if _registry_has(production):
        return production
    from ferlab.inference.sources import default_model

    local = default_model()  # the bundle if the package stage made one, else the trained .h5
    if Path(local).exists():
        return local
    paths = config.current().paths
    raise FerlabError(
        f"no model to serve: the registry has no {production} and there is no {paths.bundle} "
        f"or {paths.model}; run `dvc repro` (and `ferlab models promote`), or pass --model (a bundle "
        "folder, a .h5 or .tflite file, or models:/<name>@<alias>)."
    )


def _test_metrics(metrics_file: Path, calibrated: bool) -> dict | None:
    """PrivateTest accuracy and macro-F1, and the calibration error of these probabilities: the
    bundle's model carries the fitted temperature, the pipeline's models/model.h5 does not."""
    try:
        metrics = json.loads(metrics_file.read_text())
        test = metrics["test"]
        found = {"accuracy": float(test["accuracy"]), "macro_f1": float(test["macro_f1"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ece = metrics.get("calibration", {}).get("ece_after" if calibrated else "ece_before")
    return found | ({"ece": float(ece)} if isinstance(ece, (int, float)) else {})


def _card_name(card: Path) -> str | None:
    try:
        found = re.match(r"#\s*Model card:\s*(\S+)", card.read_text().splitlines()[0])
    except (OSError, IndexError):
        return None
    return found.group(1) if found else None


def describe(source: str) -> dict:
    """name, version, alias, source and the PrivateTest metrics (null where unknown)."""
    info = {"name": None, "version": None, "alias": None, "source": source, "test_metrics": None}
    from ferlab.lifecycle import registry

    if registry.is_uri(source):
        name, alias = registry.parse_uri(source)
        info.update(name=name, alias=alias)
        version = registry.by_alias(name, alias)
        if version is not None:
            accuracy, macro_f1, ece = (version.metric(f"test_{m}") for m in ("accuracy", "macro_f1", "ece"))
            info["version"] = version.version
            if accuracy is not None and macro_f1 is not None:
                info["test_metrics"] = {"accuracy": accuracy, "macro_f1": macro_f1} | ({"ece": ece} if ece is not None else {})
        return info
    path, paths = Path(source), config.current().paths
    folder = path if path.is_dir() else path.parent
    info["name"] = _card_name(folder / "MODEL_CARD.md") or path.name
    if (folder / "metrics.json").is_file():  # a bundle, or a .h5 inside one
        info["test_metrics"] = _test_metrics(folder / "metrics.json", calibrated=True)
    elif path.resolve() == Path(paths.model).resolve():  # the pipeline's model: its evaluate stage's numbers
        info["test_metrics"] = _test_metrics(Path(paths.metrics), calibrated=False)
    return info
