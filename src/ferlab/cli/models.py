"""`ferlab models ...`: list, promote and roll back registry versions; import a shipped pretrained
model into the registry; ship a finished training as a pretrained model (maintainers)."""

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
        help="the MLflow model registry: list, promote, roll back, import a pretrained model",
        description="Versions of the registered model and the `production` alias that inference loads (models:/<name>@production).",
    )
    sub = models.add_subparsers(dest="models_command", required=True, metavar="{list,promote,rollback,import,ship}")
    name_option = {"help": f"registered model (default: package.registered_model in params.yaml, else {config.Package().registered_model})"}
    listing = sub.add_parser("list", help="versions with test accuracy, macro-F1, aliases, creation time, source")
    listing.add_argument("--name", **name_option)
    promote = sub.add_parser(
        "promote",
        help="move `production` to a version (default: the candidate) if it is not worse",
        description="Promotes only if PrivateTest accuracy and macro-F1 are not worse than "
        "production's; a version made by `ferlab adapt` only if it beats production on the validation part of "
        "the user's faces it was scored on (production must be the version it was adapted from); "
        "--force --reason overrides and records why.",
    )
    promote.add_argument("version", nargs="?", help="version number (default: the one with alias `candidate`)")
    promote.add_argument("--force", action="store_true", help="promote even if the gate refuses")
    promote.add_argument("--reason", help="why; required with --force, recorded on the version")
    promote.add_argument("--name", **name_option)
    rollback = sub.add_parser("rollback", help="return `production` to the version it replaced")
    rollback.add_argument("--reason", help="recorded on the version rolled back")
    rollback.add_argument("--name", **name_option)
    imported = sub.add_parser(
        "import",
        help="register a pretrained model shipped with ferlab as a new version (alias candidate)",
        description="Registers pretrained:fast or pretrained:accurate, tagged with its card's PrivateTest figures, so that "
        "`ferlab models promote` compares a model you train against it. Creates the project's registry if there is none.",
    )
    imported.add_argument("model", metavar="pretrained:NAME", help="pretrained:fast or pretrained:accurate")
    imported.add_argument("--name", **name_option)
    ship = sub.add_parser(
        "ship",
        help="(maintainers) turn this checkout's models/bundle into a pretrained model shipped in the package",
        description="Converts the bundle's calibrated model to int8 and float16 TFLite, scores both on PrivateTest "
        "(data/processed from the same `dvc repro`), keeps int8 where it stays within 0.3 points of float32, and "
        "writes src/ferlab/lifecycle/shipped/NAME/ with its card (figures, training command and params, MLflow run, "
        "git commit, data checksum, hardware).",
    )
    ship.add_argument("ship_name", metavar="NAME", choices=("fast", "accurate"), help="fast or accurate")
    ship.add_argument("--bundle", help="the bundle folder (default: paths.bundle in params.yaml)")
    ship.add_argument("--command", default="dvc repro", help="the command that trained it, as the card states it (default: %(default)s)")
    ship.add_argument("--hardware", help="what trained it (default: the MLflow run's hardware tag)")
    models.set_defaults(func=run)


def cmd_import(args) -> int:
    from ferlab.lifecycle import pretrained

    if not pretrained.is_uri(args.model):
        raise FerlabError(f"{args.model} is not a pretrained model; import pretrained:fast or pretrained:accurate.")
    params = config.current()
    name = args.name or params.package.registered_model
    pretrained.verified_folder(args.model)  # a damaged install fails before the registry is touched
    version = pretrained.register(args.model, name, params.train.experiment)
    print(
        f"registered {args.model} as {name} version {version.version} (alias candidate, PrivateTest accuracy "
        f"{version.tags['test_accuracy']}); make it production with `ferlab models promote {version.version}`"
    )
    return 0


def cmd_ship(args) -> int:
    from pathlib import Path

    from ferlab.data import arrays as arrays_mod
    from ferlab.lifecycle import shipping

    params = config.current()
    processed = Path(params.paths.processed) / arrays_mod.ARRAY_FILE
    if not processed.is_file():
        raise FerlabError(f"no {processed}; ship from the checkout whose `dvc repro` made the bundle.")
    arrays = arrays_mod.load(processed)
    provenance = shipping.provenance_of_checkout(args.command, args.hardware)
    shipping.ship(
        args.ship_name,
        Path(args.bundle or params.paths.bundle),
        arrays.x["test"],
        arrays.y["test"].astype(int),
        arrays.x["train"],
        provenance,
    )
    return 0


def run(args) -> int:
    if args.models_command == "import":
        return cmd_import(args)
    if args.models_command == "ship":
        return cmd_ship(args)
    connect()
    name = args.name or config.current().package.registered_model
    if args.models_command == "list":
        rows = registry.versions(name)
        print(f"{'version':>7}  {'test_acc':>8}  {'macro_f1':>8}  {'aliases':<22}  {'created':<25}  source")
        for v in rows:
            acc, f1 = v.metric("test_accuracy"), v.metric("test_macro_f1")
            source = v.tags.get("source") or (f"run {v.run_id}" if v.run_id else "-")  # imported models name where they came from
            print(
                f"{v.version:>7}  {acc if acc is not None else '-':>8}  {f1 if f1 is not None else '-':>8}  "
                f"{','.join(v.aliases) or '-':<22}  {v.created:<25}  {source}"
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
