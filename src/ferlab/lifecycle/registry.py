"""The MLflow model registry: register a candidate, promote it behind a gate, roll back.

Aliases, not the deprecated stages: `candidate` is the newest packaged version,
`production` the one inference tools load (models:/<name>@production). Every promotion
and rollback is written on the versions as tags, so the history survives the moving alias.

The gate compares PrivateTest figures; a version made by `ferlab adapt` (tagged adapt.*) is judged
instead on the user's validation part it was scored on: it must beat the production model there,
which it can only be compared with when production is the version it was adapted from.
"""

import contextlib
import datetime as dt
import io
import signal
import threading
from dataclasses import dataclass

from ferlab.errors import FerlabError

CANDIDATE, PRODUCTION = "candidate", "production"
URI_PREFIX = "models:/"
GATE_METRICS = ("test_accuracy", "test_macro_f1")


def is_uri(source) -> bool:
    return str(source).startswith(URI_PREFIX)


def parse_uri(uri: str) -> tuple[str, str]:
    """models:/<name>@<alias> -> (name, alias)."""
    name, at, alias = str(uri).removeprefix(URI_PREFIX).partition("@")
    if not is_uri(uri) or not (name and at and alias) or "/" in name:
        raise FerlabError(f"{uri} is not a registered model alias; write models:/<name>@<alias>, e.g. models:/ferlab-emotion@production.")
    return name, alias


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _call(what: str, fn, *args, **kwargs):
    """Run a registry call; turn 'not found' and 'unreachable' into one clear sentence."""
    from mlflow.exceptions import MlflowException

    try:
        return fn(*args, **kwargs)
    except MlflowException as err:
        text = str(err)
        if "API request to" in text and ("Max retries" in text or "Connection" in text):
            import mlflow

            raise FerlabError(
                f"{what}: cannot reach the MLflow registry at {mlflow.get_tracking_uri()}; "
                "is the server running and MLFLOW_TRACKING_URI right?"
            ) from None
        if "RESOURCE_DOES_NOT_EXIST" in getattr(err, "error_code", "") or "not found" in text.lower() or "does not exist" in text.lower():
            raise FerlabError(f"{what}: not found in the registry.") from None
        raise FerlabError(f"{what}: the MLflow registry refused ({text.splitlines()[0]}).") from None
    except OSError as err:  # connection refused, DNS, timeouts (requests errors are OSErrors)
        import mlflow

        raise FerlabError(f"{what}: cannot reach the MLflow registry at {mlflow.get_tracking_uri()} ({err}).") from None


@dataclass
class VersionInfo:
    version: str
    aliases: list[str]
    created: str
    tags: dict[str, str]
    run_id: str | None

    def metric(self, name: str) -> float | None:
        value = self.tags.get(name)
        return float(value) if value not in (None, "") else None


def _info(mv) -> VersionInfo:
    created = dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.timezone.utc).isoformat(timespec="seconds")
    return VersionInfo(str(mv.version), list(mv.aliases or []), created, dict(mv.tags or {}), mv.run_id)


@contextlib.contextmanager
def interrupts_deferred():
    """Ctrl+C (SIGINT) waits until the block is done, then interrupts (in the main thread; elsewhere
    nothing changes): a registration is made whole or not at all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def register(name: str, model_uri: str, tags: dict[str, str], run_id: str | None = None) -> VersionInfo:
    """A new version of `name` from `model_uri`, tagged, with the alias `candidate`. Ctrl+C waits for
    the version and its alias; a failure between the two deletes the version, so none is left half made."""
    import mlflow

    with interrupts_deferred():
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints "Created version ..."; the caller says it once
            mv = _call(f"registering {model_uri} as {name}", mlflow.register_model, model_uri, name, tags=tags)
        client = _client()
        try:
            client.set_registered_model_alias(name, CANDIDATE, mv.version)
        except BaseException:
            with contextlib.suppress(Exception):
                client.delete_model_version(name, mv.version)
            raise
    return _info(client.get_model_version(name, mv.version))


def versions(name: str) -> list[VersionInfo]:
    client = _client()
    _call(f"registered model {name!r}", client.get_registered_model, name)
    found = _call(f"versions of {name!r}", client.search_model_versions, f"name='{name}'")
    # search results leave out aliases; a version fetched on its own has them
    return sorted((_info(client.get_model_version(name, mv.version)) for mv in found), key=lambda v: int(v.version), reverse=True)


def by_alias(name: str, alias: str) -> VersionInfo | None:
    from mlflow.exceptions import MlflowException

    client = _client()
    _call(f"registered model {name!r}", client.get_registered_model, name)
    try:
        return _info(client.get_model_version_by_alias(name, alias))
    except MlflowException:
        return None


def find(name: str, alias: str) -> VersionInfo | None:
    """by_alias, but None also where the registry holds no model `name` yet (nothing registered is
    not an error here); a registry that cannot be reached still is."""
    if not _call("registered models", _client().search_registered_models, f"name='{name}'"):
        return None
    return by_alias(name, alias)


def get(name: str, version: str) -> VersionInfo:
    return _info(_call(f"version {version} of {name!r}", _client().get_model_version, name, str(version)))


def tag_version(name: str, version: str, key: str, value: str) -> None:
    _call(f"version {version} of {name!r}", _client().set_model_version_tag, name, str(version), key, value)


ADAPT_PARENT_VERSION = "adapt.parent_version"  # tags of a version made by `ferlab adapt` (ferlab.lifecycle.adapted)
ADAPT_GATE_METRICS = ("adapt.val_accuracy", "adapt.val_macro_f1")  # + _before (its parent's) and _after (its own)


def is_adapted(version: VersionInfo) -> bool:
    return f"{ADAPT_GATE_METRICS[0]}_after" in version.tags


def _adapted_gate(candidate: VersionInfo, current: VersionInfo) -> list[str]:
    """An adapted version against production on the user's validation part: it must have been adapted
    from production's version, beat its accuracy there and not lower its macro-F1."""
    where = f"{candidate.tags.get('adapt.dataset', 'the user set')}'s validation part ({candidate.tags.get('adapt.val_faces', '?')} faces)"
    parent = candidate.tags.get(ADAPT_PARENT_VERSION)
    if parent != current.version:
        made_from = f"version {parent}" if parent else candidate.tags.get("adapt.parent", "a model outside the registry")
        return [
            f"version {candidate.version} was compared on {where} with {made_from}, not with production (version "
            f"{current.version}); adapt production's model again (ferlab adapt DATA --model models:/<name>@production)"
        ]
    reasons = []
    accuracy, macro_f1 = ADAPT_GATE_METRICS
    new, old = candidate.metric(f"{accuracy}_after"), candidate.metric(f"{accuracy}_before")
    if old is not None and not new > old:
        reasons.append(f"its accuracy on {where} is {new:.4f}, which does not beat production's {old:.4f} (version {current.version})")
    new, old = candidate.metric(f"{macro_f1}_after"), candidate.metric(f"{macro_f1}_before")
    if old is not None and new < old:
        reasons.append(f"its macro-F1 on {where} is {new:.4f}, below production's {old:.4f}")
    return reasons


def gate(candidate: VersionInfo, current: VersionInfo | None) -> list[str]:
    """Reasons the candidate may not replace production (empty: it may go): worse on PrivateTest, or for
    a version made by `ferlab adapt`, not better on the user's validation part (_adapted_gate)."""
    if current is None:
        return []
    if is_adapted(candidate):
        return _adapted_gate(candidate, current)
    reasons = []
    for metric in GATE_METRICS:
        new, old = candidate.metric(metric), current.metric(metric)
        if new is None:
            reasons.append(f"version {candidate.version} has no {metric} tag")
        elif old is not None and new < old:
            reasons.append(f"{metric} {new:.4f} is below production's {old:.4f} (version {current.version})")
    if is_adapted(current):
        reasons.append(
            f"production (version {current.version}) was adapted to {current.tags.get('adapt.dataset', 'a user set')} "
            f"and version {candidate.version} was never scored on it; adapt it too (ferlab adapt), or override"
        )
    return reasons


def promote(
    name: str, version: str | None = None, force: bool = False, reason: str | None = None
) -> tuple[VersionInfo, VersionInfo | None]:
    """Move `production` to `version` (default: the candidate) if the gate allows or `force` with a reason."""
    if force and not reason:
        raise FerlabError('--force needs --reason "..." so the override is on record.')
    if version is None:
        chosen = by_alias(name, CANDIDATE)
        if chosen is None:
            raise FerlabError(f"{name!r} has no candidate version; run `dvc repro` to package one or name a version.")
    else:
        chosen = get(name, version)
    current = by_alias(name, PRODUCTION)
    if current is not None and current.version == chosen.version:
        raise FerlabError(f"version {chosen.version} of {name!r} is already in production.")
    refusals = gate(chosen, current)
    if refusals and not force:
        raise FerlabError(f"not promoting version {chosen.version}: " + "; ".join(refusals) + ' (override with --force --reason "...").')
    client = _client()
    client.set_registered_model_alias(name, PRODUCTION, chosen.version)
    record = {
        "promoted_at": _now(),
        "promoted_from": current.version if current else "none",
        "promotion_reason": reason or ("forced" if force else "passed the gate"),
    }
    if refusals:
        record["promotion_overrode"] = "; ".join(refusals)
    for key, value in record.items():
        client.set_model_version_tag(name, chosen.version, key, value)
    return get(name, chosen.version), current


def rollback(name: str, reason: str | None = None) -> tuple[VersionInfo, VersionInfo]:
    """Return `production` to the version it was promoted from."""
    current = by_alias(name, PRODUCTION)
    if current is None:
        raise FerlabError(f"{name!r} has no production version to roll back.")
    previous = current.tags.get("promoted_from")
    if not previous or previous == "none":
        raise FerlabError(f"version {current.version} of {name!r} was the first in production; there is nothing to roll back to.")
    target = get(name, previous)
    client = _client()
    client.set_registered_model_alias(name, PRODUCTION, target.version)
    when = _now()
    client.set_model_version_tag(name, current.version, "rolled_back_at", when)
    client.set_model_version_tag(name, current.version, "rollback_reason", reason or "rollback")
    # target keeps its own promoted_from, so a second rollback goes one step further back
    client.set_model_version_tag(name, target.version, "restored_at", when)
    return get(name, target.version), current


def local_model_file(name: str, alias: str) -> str:
    """Download models:/<name>@<alias> and return the path of its model file for the inference
    tools: the .h5, or model.tflite for a version that holds only that (`ferlab models import`)."""
    import mlflow

    if by_alias(name, alias) is None:
        raise FerlabError(
            f"no version of {name!r} has the alias {alias!r}; promote one with `ferlab models promote` (or run `dvc repro` to package one)."
        )
    local = _call(f"models:/{name}@{alias}", mlflow.artifacts.download_artifacts, f"models:/{name}@{alias}")
    from pathlib import Path

    def model_files(pattern: str) -> list[Path]:  # not the copy of the ferlab package under code/ (it holds the shipped models)
        return sorted(p for p in Path(local).rglob(pattern) if "code" not in p.relative_to(local).parts)

    found = model_files("*.h5") or model_files("model.tflite")
    if not found:
        raise FerlabError(f"models:/{name}@{alias} holds no .h5 or .tflite model; package it again with `dvc repro`.")
    return str(found[0])
