"""What the commands share: errors on stderr, input expansion, the model options and the recogniser.

A FerlabError ends a command with `error: <message>` on stderr and exit status 1; never a traceback."""

import argparse
import glob
import sys
from pathlib import Path

from ferlab.inference.labelled_set import IMAGE_SUFFIXES  # looked for in folders; --annotate keeps them


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def expand_inputs(patterns: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (searched recursively for images) and globs -> (files, [(input, problem)])."""
    files, problems = [], []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                problems.append((pattern, f"{pattern} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})."))
            files.extend(found)
        elif path.exists() or not glob.has_magic(pattern):
            files.append(pattern)  # a missing file is reported when it is read
        else:
            found = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not found:
                problems.append((pattern, f"{pattern} matches no file."))
            files.extend(found)
    return files, problems


def unique_name(stem: str, suffix: str, used: set[str]) -> str:
    """stem + suffix, or stem_2 + suffix, ...: inputs of the same name from different folders stay apart."""
    name, n = f"{stem}{suffix}", 1
    while name in used:
        n += 1
        name = f"{stem}_{n}{suffix}"
    used.add(name)
    return name


def input_files(patterns: list[str]) -> tuple[list[str], int]:
    """The files to read, after saying in one line each which patterns found none; and how many did not."""
    files, problems = expand_inputs(patterns)
    for _, message in problems:
        error(message)
    return files, len(problems)


def load_recognizer(args):
    """The recogniser a command's model options name (ferlab.inference.options.RecognizerOptions)."""
    from ferlab.inference.options import RecognizerOptions

    return RecognizerOptions.from_args(args).load()


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


MODEL_RULE = (
    "(default: $FERLAB_MODEL, else the registry's models:/ferlab-emotion@production when there is one, "
    "else this folder's models/bundle, else the shipped pretrained model)"
)


def model_options(group) -> None:
    """--model, --runtime, --detector, --align and --tta: the same for every command that uses a model."""
    from ferlab.inference.detect import DEFAULT_DETECTOR, DETECTORS
    from ferlab.inference.predict import DEFAULT_TTA, TTA_MODES
    from ferlab.inference.sources import DEFAULT_RUNTIME, RUNTIMES

    group.add_argument(
        "--model",
        metavar="SOURCE",
        help="pretrained:fast or pretrained:accurate (shipped with ferlab), a bundle folder (models/bundle), a .h5 or "
        f".tflite file, or a registered model, e.g. models:/ferlab-emotion@production {MODEL_RULE}",
    )
    group.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=DEFAULT_RUNTIME,
        help="tflite: the bundle's model.tflite on LiteRT (starts fast, no TensorFlow); keras: the .h5 "
        "on TensorFlow; auto: tflite where the model has it (default: %(default)s)",
    )
    group.add_argument(
        "--detector",
        choices=DETECTORS,
        default=DEFAULT_DETECTOR,
        help="face detector: blazeface (LiteRT, fastest, eye landmarks), haar (OpenCV, the paper's) "
        "or mtcnn (TensorFlow, eye landmarks, slowest) (default: %(default)s)",
    )
    group.add_argument(
        "--align",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rotate faces so the eyes are level (blazeface and mtcnn; default: the model's contract, "
        "on for ferlab's bundles; haar finds no eyes and never levels)",
    )
    group.add_argument(
        "--tta",
        choices=TTA_MODES,
        default=DEFAULT_TTA,
        help="test-time augmentation: flip averages each face with its mirror image (more accurate, "
        "one batch of twice the faces); ten-crop averages ten shifted and mirrored views, scale-rotate ten "
        "scaled, turned and mirrored views (both ten times the faces); none classifies the face alone "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--filling-faces",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="where the detector finds no face, look again for one face that fills the whole image "
        "(a cropped portrait, a face already cut out); --no-filling-faces skips that second detection "
        "on images and frames without a face (default: on)",
    )


def common_parser() -> argparse.ArgumentParser:
    """The options of every command that reads images with a model: model, detector, limits, --quiet."""
    from ferlab.inference.images import DEFAULT_MAX_PIXELS

    common = argparse.ArgumentParser(add_help=False)
    model = common.add_argument_group("model and detector")
    model_options(model)
    model.add_argument(
        "--max-pixels",
        type=positive,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="refuse images larger than this many pixels (default: %(default)s)",
    )
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return common
