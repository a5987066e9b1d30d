"""Which model `ferlab serve` serves by default, and what GET /v1/model says about it."""

import json
import os
import re
from pathlib import Path

from ferlab import config


def default_source(env=os.environ) -> str:
    """The model `ferlab serve` serves when none is named: the one rule of every tool (ferlab.inference.sources.resolve)."""
    from ferlab.inference.sources import resolve

    return resolve(None, env).source


def source_token(source: str):
    """What the model source looks like now, to notice a new model: the version a registry alias
    points at, a file's (or a bundle's files') size and time; a shipped model never changes."""
    from ferlab.lifecycle import pretrained, registry, tracking

    if pretrained.is_uri(source):
        return source
    if registry.is_uri(source):
        if tracking.connect() is None:  # no registry (yet): never create an empty one by asking
            return None
        version = registry.by_alias(*registry.parse_uri(source))
        return version.version if version is not None else None
    path = Path(source)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.exists())


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
    from ferlab.lifecycle import pretrained, registry

    if pretrained.is_uri(source):
        card = pretrained.card(pretrained.name_of(source))
        test = card["privatetest"]
        info.update(name=card["name"], version=card["version"])
        # as for the other sources: one view's accuracy and macro-F1, the calibration error as the tools predict (flip)
        info["test_metrics"] = {"accuracy": test["none"]["accuracy"], "macro_f1": test["none"]["macro_f1"], "ece": test["flip"]["ece"]}
        return info
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
