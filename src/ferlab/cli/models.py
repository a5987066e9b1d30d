"""`ferlab models ...`: list, promote and roll back registry versions."""

import argparse
import os

from ferlab import config
from ferlab.errors import FerlabError
from ferlab.lifecycle import registry, tracking


def connect() -> None:
    # fail in seconds, not minutes, when a server is down
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    if tracking.connect() is None:
        raise FerlabError(
            f"there is no MLflow registry at {tracking.tracking_uri()}; run `dvc repro` in the project, or set MLFLOW_TRACKING_URI."
        )


def add_command(sub, common: argparse.ArgumentParser) -> None:  # common: unused, no model options here
    models = sub.add_parser(
        "models",
        help="the MLflow model registry: list, promote, roll back",
        description="Versions of the registered model and the `production` alias that inference loads (models:/<name>@production).",
    )
    sub = models.add_subparsers(dest="models_command", required=True, metavar="{list,promote,rollback}")
    name_option = {"help": f"registered model (default: package.registered_model in params.yaml, else {config.Package().registered_model})"}
    listing = sub.add_parser("list", help="versions with test accuracy, macro-F1, aliases, creation time")
    listing.add_argument("--name", **name_option)
    promote = sub.add_parser(
        "promote",
        help="move `production` to a version (default: the candidate) if it is not worse",
        description="Promotes only if PrivateTest accuracy and macro-F1 are not worse than "
        "production's; --force --reason overrides and records why.",
    )
    promote.add_argument("version", nargs="?", help="version number (default: the one with alias `candidate`)")
    promote.add_argument("--force", action="store_true", help="promote even if the gate refuses")
    promote.add_argument("--reason", help="why; required with --force, recorded on the version")
    promote.add_argument("--name", **name_option)
    rollback = sub.add_parser("rollback", help="return `production` to the version it replaced")
    rollback.add_argument("--reason", help="recorded on the version rolled back")
    rollback.add_argument("--name", **name_option)
    models.set_defaults(func=run)


def run(args) -> int:
    connect()
    name = args.name or config.current().package.registered_model
    if args.models_command == "list":
        rows = registry.versions(name)
        print(f"{'version':>7}  {'test_acc':>8}  {'macro_f1':>8}  {'aliases':<22}  created")
        for v in rows:
            acc, f1 = v.metric("test_accuracy"), v.metric("test_macro_f1")
            print(
                f"{v.version:>7}  {acc if acc is not None else '-':>8}  {f1 if f1 is not None else '-':>8}  "
                f"{','.join(v.aliases) or '-':<22}  {v.created}"
            )
        return 0
    if args.models_command == "promote":
        chosen, previous = registry.promote(name, args.version, force=args.force, reason=args.reason)
        print(
            f"{name} version {chosen.version} is now in production"
            + (f" (was version {previous.version})" if previous else " (the first production version)")
        )
        return 0
    target, current = registry.rollback(name, reason=args.reason)
    print(f"{name}: production rolled back from version {current.version} to version {target.version}")
    return 0
