"""`ferlab evaluate`: the model on a labelled set of the user's own images."""

import argparse
import json
import sys

from ferlab.cli.common import error, load_recognizer
from ferlab.contract import EMOTIONS

EPILOG = """examples:
  ferlab evaluate my_faces/                       # my_faces/happy/*.jpg, my_faces/Sadness/*.png, ...
  ferlab evaluate labels.csv --out eval_v3/       # a CSV of path,label (paths relative to the CSV)
  ferlab evaluate crops/ --face-crop --json
  ferlab evaluate my_faces/ --model models:/ferlab-emotion@production --log

Label names are matched case-insensitively with synonyms (anger, happiness, sadness, surprised,
fearful, disgusted, ...); a label outside FER2013's seven (contempt) is reported and skipped."""


def add_command(sub, common: argparse.ArgumentParser) -> None:
    cmd = sub.add_parser(
        "evaluate",
        parents=[common],
        help="score the model on your own labelled images",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score the model on a labelled set: a folder with one subfolder per emotion, or a CSV of\n"
        "path,label. Writes to --out: summary.json, predictions.csv (one row per image),\n"
        "confusion_matrix.json/.png and mistakes.png (the most confident mistakes).\n"
        "Images with no face, several faces, or that cannot be read are counted and listed.",
        epilog=EPILOG,
    )
    cmd.add_argument("data", metavar="DATA", help="a folder of emotion subfolders, or a .csv of path,label")
    cmd.add_argument("--out", metavar="DIR", help="report folder (default: ./<DATA name>_evaluation)")
    cmd.add_argument("--face-crop", action="store_true", help="the images already are face crops: classify them whole")
    cmd.add_argument(
        "--largest-face",
        action="store_true",
        help="score the largest face of an image with several (default: such images are counted, not scored)",
    )
    cmd.add_argument("--mistakes", type=int, default=32, metavar="N", help="faces on the mistakes sheet (default: %(default)s)")
    cmd.add_argument(
        "--log",
        action="store_true",
        help="record the evaluation in MLflow (experiment ferlab-evaluations), against the registered "
        "version when --model is models:/<name>@<alias>",
    )
    cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
    cmd.set_defaults(func=run)


def _print_summary(summary: dict, files: dict) -> None:
    print(
        f"{summary['dataset']}: {summary['scored']} of {summary['images']} images scored; "
        f"accuracy {summary['accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f} "
        f"(over {len(summary['classes_in_macro'])} classes)"
    )
    print(f"{'emotion':<10}{'precision':>10}{'recall':>8}{'F1':>8}{'faces':>7}")
    for emotion in summary.get("emotions", EMOTIONS):
        cls = summary["per_class"][emotion]
        if cls:
            print(f"{emotion:<10}{cls['precision']:>10.3f}{cls['recall']:>8.3f}{cls['f1']:>8.3f}{cls['support']:>7}")
    if summary["absent_classes"]:
        print(f"not in the set (left out of the macro averages): {', '.join(summary['absent_classes'])}")
    not_scored = {k: v for k, v in summary["not_scored"].items() if v}
    if not_scored:
        print("not scored: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in not_scored.items()) + " (see predictions.csv)")
    if summary["skipped_labels"]:
        outside = "FER2013's seven" if tuple(summary.get("emotions", EMOTIONS)) == EMOTIONS else "the model's emotions"
        print(f"skipped labels outside {outside}: " + ", ".join(f"{k} ({v})" for k, v in summary["skipped_labels"].items()))
    for name, path in files.items():
        print(f"  {name}: {path}")


def run(args) -> int:
    from pathlib import Path

    from ferlab.inference import assess, labelled_set

    labelled = labelled_set.read(args.data)
    for problem in labelled.problems:
        error(problem)
    recognizer = load_recognizer(args)
    if recognizer.emotions != EMOTIONS:  # a model adapted to fewer emotions: the other labels are skipped, as contempt is
        kept = [(path, label) for path, label in labelled.items if label in recognizer.emotions]
        for _, label in labelled.items:
            if label not in recognizer.emotions:
                labelled.skipped[label] = labelled.skipped.get(label, 0) + 1
        labelled.items = kept
    outcomes = assess.score(recognizer, labelled, face_crop=args.face_crop, largest_face=args.largest_face, progress=not args.quiet)
    for outcome in outcomes:
        if outcome.status == "unreadable":
            error(outcome.message)
    model_source = recognizer.model_source
    setup = {
        "model": model_source,
        "detector": "none (face crops)" if args.face_crop else recognizer.detector_name,
        "tta": recognizer.tta,
        "largest_face": args.largest_face,
    }
    summary = assess.summarise(outcomes, labelled, setup)
    out = Path(args.out) if args.out else Path(f"{labelled.name}_evaluation")
    files = assess.write_report(summary, outcomes, out, mistakes=args.mistakes)
    if args.log:
        summary["mlflow_run_id"] = assess.log_run(summary, files, labelled, model_source)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        _print_summary(summary, files)
        if args.log:
            print(f"logged to MLflow run {summary['mlflow_run_id']} (experiment {assess.EXPERIMENT})")
    return 0
