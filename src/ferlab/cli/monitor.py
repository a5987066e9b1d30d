"""`ferlab monitor`: a window of the service's face log against the reference (PrivateTest through
the same model), as a drift report, with an exit status for cron and CI (ferlab.serve.drift)."""

import argparse
import json
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ferlab.cli.common import load_recognizer, positive
from ferlab.errors import FerlabError

DRIFT_EXIT = 3  # 0: no drift, 1: an error, 2: a usage error (argparse), 3: drift at or above the threshold

EPILOG = """examples:
  ferlab serve --face-log logs/faces.jsonl         # the service keeps the log (opt-in)
  ferlab monitor logs/faces.jsonl --since 24h      # the last day against PrivateTest, to ./faces_drift/
  ferlab monitor logs/faces.jsonl --last 2000 --threshold 0.3 --log --out reports/drift/
  ferlab monitor logs/faces.jsonl --reference ~/data/fer2013/archive.zip --model pretrained:fast

Exit status: 0 no drift, 3 drift (the share of drifted features reached --threshold), 1 an error.
The reference is FER2013's PrivateTest summarised through the model the command loads (--model, or
the same rule as `ferlab serve`): name the model the service ran. It is computed once per model and
dataset and cached (--cache)."""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def when(text: str) -> datetime:
    """An ISO 8601 time (UTC when it names no zone) or a duration before now: 30m, 24h, 7d, 2w."""
    match = _DURATION.match(text.strip())
    if match:
        return datetime.now(timezone.utc) - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an ISO 8601 time (2026-12-07T09:00) nor a duration (30m, 24h, 7d)") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a share above 0 and at most 1, not {value}")
    return value


def add_command(sub, common: argparse.ArgumentParser) -> None:
    from ferlab.serve.drift import DEFAULT_THRESHOLD, FEATURES

    cmd = sub.add_parser(
        "monitor",
        parents=[common],
        help="drift report: the faces the service saw against PrivateTest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare a window of the face log that `ferlab serve --face-log` keeps with the faces the model\n"
        "was tested on (FER2013's PrivateTest through the same model), feature by feature with Evidently:\n"
        + "".join(f"  {name}: {what}\n" for name, what in FEATURES.items())
        + "Writes drift.json, drift.html and columns.html to --out; exits 3 when the share of drifted\n"
        "features reaches --threshold.",
        epilog=EPILOG,
    )
    cmd.add_argument("face_log", metavar="FACE_LOG", help="the face log (its rotated files FACE_LOG.1, .2, ... are read too)")
    window = cmd.add_argument_group("window")
    window.add_argument(
        "--since", type=when, metavar="WHEN", help="faces logged at this time or later: 2026-12-07T09:00, or 30m, 24h, 7d ago"
    )
    window.add_argument("--until", type=when, metavar="WHEN", help="faces logged before this time (same forms)")
    window.add_argument("--last", type=positive, metavar="N", help="the last N faces (of --since/--until when given)")
    window.add_argument(
        "--model-version",
        metavar="VERSION",
        help="only the faces this model version classified (the log's `model` field); needed when the window holds several",
    )
    cmd.add_argument(
        "--reference",
        metavar="SOURCE",
        help="FER2013 to take PrivateTest from: archive.zip, its extracted folder, fer2013.csv or a raw table .parquet; or a "
        ".jsonl of face summaries to use as they are (default: this project's data/raw table or data/external/ FER2013)",
    )
    cmd.add_argument(
        "--threshold",
        type=share,
        default=DEFAULT_THRESHOLD,
        metavar="SHARE",
        help="drift when at least this share of the tested features drift (default: %(default)s)",
    )
    cmd.add_argument("--out", metavar="DIR", help="report folder (default: ./<FACE_LOG name>_drift)")
    cmd.add_argument("--cache", metavar="DIR", help="where references are kept (default: $FERLAB_CACHE, else ~/.cache/ferlab)")
    cmd.add_argument("--log", action="store_true", help="record the report in MLflow (experiment ferlab-monitoring)")
    cmd.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    cmd.set_defaults(func=run)


def _window_description(args, faces: int) -> str:
    parts = [f"{faces} faces of {args.face_log}"]
    if args.since:
        parts.append(f"since {args.since.isoformat(timespec='seconds')}")
    if args.until:
        parts.append(f"until {args.until.isoformat(timespec='seconds')}")
    if args.last:
        parts.append(f"the last {args.last}")
    if args.model_version:
        parts.append(f"model {args.model_version}")
    return ", ".join(parts)


def run(args) -> int:
    from ferlab.serve import drift
    from ferlab.serve.face_log import read_window

    if args.since and args.until and args.since >= args.until:
        raise FerlabError("--since is not before --until: the window is empty.")
    window = read_window(args.face_log, args.since, args.until, None if args.model_version else args.last)
    if window.corrupt:
        print(
            f"warning: {window.corrupt} of {window.lines} lines of {args.face_log} are not face summaries "
            f"(the first at {window.first_corrupt}); skipped.",
            file=sys.stderr,
        )
    rows = window.rows
    if args.model_version:
        rows = [r for r in rows if str(r.get("model")) == args.model_version]
        if args.last:
            rows = rows[-args.last :]
        if not rows:
            raise FerlabError(f"no face of model {args.model_version} in the window; the log's versions there: {_versions(window.models)}.")
    elif len(window.models) > 1:
        raise FerlabError(
            f"the window holds faces of {len(window.models)} model versions ({_versions(window.models)}); pick one with --model-version."
        )
    if not rows:
        raise FerlabError(f"the window holds no face: {args.face_log} has {window.lines} lines, none in it; widen --since/--until.")
    drift.import_evidently()  # before the model and the reference: a missing install is said at once
    recognizer = load_recognizer(args)
    say = (lambda message: None) if args.quiet else drift.say_stderr
    reference = drift.load_reference(recognizer, args.reference, Path(args.cache) if args.cache else None, say)
    result, snapshot = drift.compare(rows, reference.rows, args.threshold)
    models = sorted({str(r.get("model")) for r in rows})
    result["window"] = {"description": _window_description(args, len(rows)), "models": models, "corrupt_lines": window.corrupt}
    result["reference"] = {
        "description": reference.description,
        "model": reference.model,
        "cache": str(reference.cached) if reference.cached else None,
    }
    result["created"] = drift.now()
    out = Path(args.out) if args.out else Path(f"{Path(args.face_log).name.split('.')[0]}_drift")
    files = drift.write_report(result, snapshot, out)
    if args.log:
        result["mlflow_run_id"] = drift.log_run(result, files)
        from ferlab.fileio import write_json

        write_json(files["json"], result)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(drift.verdict_line(result))
        for name, f in result["features"].items():
            state = "not tested" if f["drift"] is None else ("DRIFT" if f["drift"] else "ok")
            score = f"{f['score']:.4g} (threshold {f['threshold']:.4g})" if f["drift"] is not None else f["why"]
            print(f"  {name:<16}{state:<11}{score}")
        for name, path in files.items():
            print(f"  {name}: {path}")
        if args.log:
            print(f"logged to MLflow run {result['mlflow_run_id']} (experiment {drift.EXPERIMENT})")
    return DRIFT_EXIT if result["drift"] else 0


def _versions(models: dict[str, int]) -> str:
    return ", ".join(f"{name}: {count} faces" for name, count in sorted(models.items(), key=lambda kv: -kv[1]))
