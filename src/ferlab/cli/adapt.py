"""`ferlab adapt`: fine-tune the model on the user's own labelled faces (ferlab.inference.adapt)."""

import argparse
import json
import sys

from ferlab.cli.common import MODEL_RULE, positive

EPILOG = """examples:
  ferlab adapt my_faces/                                   # my_faces/happy/*.jpg, ...; 20% held out to judge it
  ferlab adapt labels.csv --val-fraction 0.25             # a CSV of path,label[,group]: a person's images stay on one side
  ferlab adapt train/ --val val/ --face-crop --epochs 10
  ferlab adapt my_faces/ --emotions happy,sad,neutral     # a model with these three outputs, in this order
  ferlab adapt my_faces/ --model models:/ferlab-emotion@production --log   # a registered candidate
  ferlab models promote                                   # production only if it beat production on your faces

Nothing is written when an input is wrong: labels outside the emotions, unreadable images, images without
exactly one face (--skip-unusable leaves them out), too few faces per emotion, an emotion in VAL that DATA
lacks. Ctrl+C leaves no half-written bundle and no half-registered version."""


def add_command(sub, common: argparse.ArgumentParser) -> None:  # common: its --runtime and --tta mean nothing here
    from ferlab.inference.adapt import DEFAULT_VAL_FRACTION, MIN_TRAIN_FACES, MIN_VAL_FACES
    from ferlab.inference.detect import DEFAULT_DETECTOR, DETECTORS
    from ferlab.inference.images import DEFAULT_MAX_PIXELS
    from ferlab.training.finetune import BATCH_NORM, LAYERS, MAX_EPOCHS, MIN_EPOCHS, Recipe

    cmd = sub.add_parser(
        "adapt",
        help="fine-tune the model on your own labelled faces: a new bundle and registry candidate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune a model on a labelled set of your faces (what `ferlab evaluate` takes), re-fit its temperature\n"
        "on a validation part, and report before and after on that part (accuracy and macro-F1 with bootstrap 95%\n"
        "intervals, recall per emotion, confusion matrices) and on FER2013 PrivateTest where this machine has it.\n"
        "Writes a bundle (--out) that every tool takes as --model; --log also records an MLflow run and registers\n"
        f"a candidate version. Each emotion needs {MIN_TRAIN_FACES} faces to train on and {MIN_VAL_FACES} to validate on.",
        epilog=EPILOG,
    )
    cmd.add_argument("data", metavar="DATA", help="a folder of emotion subfolders, or a .csv of path,label[,group]")
    held = cmd.add_mutually_exclusive_group()
    held.add_argument("--val", metavar="VAL", help="the labelled set to judge on (default: a stratified part of DATA)")
    held.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help="the share of DATA held out to judge on, stratified by emotion and by the CSV's group column "
        f"(default: {DEFAULT_VAL_FRACTION:g})",
    )
    cmd.add_argument(
        "--model", metavar="SOURCE", help=f"the model to adapt: a bundle folder, a .h5 file or models:/<name>@<alias> {MODEL_RULE}"
    )
    cmd.add_argument(
        "--emotions", metavar="LIST", help="the adapted model's emotions, in this order, e.g. happy,sad,neutral (default: the model's)"
    )
    cmd.add_argument(
        "--epochs",
        type=positive,
        metavar="N",
        help=f"passes over the training faces (default: about {Recipe().steps} steps' worth, {MIN_EPOCHS} to {MAX_EPOCHS})",
    )
    cmd.add_argument(
        "--learning-rate", type=float, default=Recipe().learning_rate, metavar="R", help="peak AdamW rate (default: %(default)g)"
    )
    cmd.add_argument(
        "--layers",
        choices=LAYERS,
        default=Recipe().layers,
        help="what trains: every layer, the two dense layers, the last (default: %(default)s)",
    )
    cmd.add_argument(
        "--batch-norm",
        choices=BATCH_NORM,
        default=Recipe().batch_norm,
        help="batch normalisation: the model's statistics (frozen), re-estimated on your faces first (renormalised), "
        "or trained with --layers all (default: %(default)s)",
    )
    cmd.add_argument("--seed", type=int, default=0, help="the split's and training's seed (default: %(default)s)")
    cmd.add_argument("--out", metavar="DIR", help="the adapted bundle's folder (default: ./<DATA name>_adapted)")
    faces = cmd.add_argument_group("faces")
    faces.add_argument("--face-crop", action="store_true", help="the images already are face crops: no detection")
    faces.add_argument("--largest-face", action="store_true", help="take the largest face of an image with several")
    faces.add_argument(
        "--skip-unusable",
        action="store_true",
        help="leave out (and count) images that cannot be read, hold no face or several, or are labelled outside the emotions",
    )
    faces.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR, help="face detector (default: %(default)s)")
    faces.add_argument(
        "--max-pixels", type=positive, default=DEFAULT_MAX_PIXELS, metavar="N", help="refuse larger images (default: %(default)s)"
    )
    test = cmd.add_mutually_exclusive_group()
    test.add_argument(
        "--fer2013", metavar="PATH", help="FER2013 (archive.zip, folder or fer2013.csv) for PrivateTest (default: this checkout's)"
    )
    test.add_argument("--no-privatetest", action="store_true", help="do not score FER2013 PrivateTest")
    cmd.add_argument(
        "--log",
        action="store_true",
        help="record an MLflow run (experiment ferlab-adaptations) and register the model as a candidate version",
    )
    cmd.add_argument("--name", help="registered model for --log (default: --model's, else package.registered_model)")
    cmd.add_argument("--json", action="store_true", help="print the report (adapt.json) as JSON")
    cmd.add_argument("-q", "--quiet", action="store_true", help="no progress")
    cmd.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from ferlab.inference.adapt import adapt
    from ferlab.lifecycle.adapted import figures_line
    from ferlab.training.finetune import Recipe

    recipe = dataclasses.replace(
        Recipe(), epochs=args.epochs, learning_rate=args.learning_rate, layers=args.layers, batch_norm=args.batch_norm, seed=args.seed
    )
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if not args.quiet else (lambda text: None)
    result = adapt(
        args.data,
        val=args.val,
        val_fraction=args.val_fraction,
        model=args.model,
        emotions=args.emotions,
        recipe=recipe,
        out=args.out,
        face_crop=args.face_crop,
        largest_face=args.largest_face,
        skip_unusable=args.skip_unusable,
        detector=args.detector,
        max_pixels=args.max_pixels,
        fer2013=args.fer2013,
        privatetest=not args.no_privatetest,
        log=args.log,
        name=args.name,
        print_fn=say,
        progress=not args.quiet,
    )
    report = result.report
    if args.json:
        json.dump({k: v for k, v in report.items() if k != "history"}, sys.stdout, indent=2)
        print()
        return 0
    print(figures_line(report["validation"], "validation part"))
    if report["privatetest"].get("before"):
        print(figures_line(report["privatetest"], "FER2013 PrivateTest"))
    val = report["validation"]
    print(f"{'emotion':<10}{'recall before':>15}{'after':>8}{'faces':>7}")
    for e in report["emotions"]:
        print(
            f"{e:<10}{val['before']['per_class'][e]['recall']:>15.3f}{val['after']['per_class'][e]['recall']:>8.3f}{val['after']['per_class'][e]['support']:>7}"
        )
    print(f"bundle: {result.bundle} ({report['minutes']:.1f} minutes); use it with --model {result.bundle}")
    if result.version is not None:
        name = report["registered"]["name"]
        print(
            f"registered {name} version {result.version.version} (alias candidate, MLflow run {result.run_id}); "
            f"`ferlab models promote {result.version.version}` makes it production if it beat production on your faces"
        )
    return 0
