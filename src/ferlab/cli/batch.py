"""`ferlab batch`: score a folder, glob, CSV of paths or Parquet of images into one Parquet or
CSV file, one row per face, on every core, resuming an interrupted run."""

import argparse
import glob
import os
import signal
import sys

from ferlab.cli.common import error, expand_inputs, positive


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # a kill ends the run as Ctrl+C does: the finished parts are kept


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def cmd_batch(args) -> int:
    from tqdm import tqdm

    from ferlab.errors import FerlabError
    from ferlab.inference import batch_input
    from ferlab.inference.batch import BatchJob, output_format
    from ferlab.inference.options import RecognizerOptions

    output_format(args.output)  # before any work: a wrong suffix is one line at once
    if batch_input.is_table(args.input):
        images = batch_input.read_table(args.input)
    elif not os.path.exists(args.input) and not glob.has_magic(args.input):
        raise FerlabError(f"{args.input}: no such file or folder; check the path.")
    else:
        files, problems = expand_inputs([args.input])
        if problems or not files:
            raise FerlabError(problems[0][1] if problems else f"{args.input} names no image.")
        images = batch_input.of_files(args.input, files)
    job = BatchJob(images, args.output, RecognizerOptions.from_args(args), args.part_size)
    bar = tqdm(unit="image", disable=args.quiet or None, file=sys.stderr, dynamic_ncols=True)

    def start(done: int, total: int) -> None:
        bar.reset(total)
        bar.update(done)
        if done:
            bar.write(f"resuming: {done:,} of {total:,} images were scored by an earlier run", file=sys.stderr)

    def unreadable(sentence: str) -> None:
        bar.clear()
        error(sentence)

    # Ctrl+C too: a process started with SIGINT ignored (a shell's background job) keeps it ignored
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = job.run(args.workers, args.overwrite, args.timeout, lambda: bar.update(1), unreadable, start)
    except KeyboardInterrupt:
        bar.close()
        error(str(job.stopped("interrupted")))
        return 130
    finally:
        bar.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(
        f"{args.output}: {summary.images:,} images, {summary.faces:,} faces; "
        f"{summary.no_face:,} without a face, {summary.unreadable:,} unreadable (see the error column)."
    )
    if summary.unreadable:
        error(f"{summary.unreadable:,} of {summary.images:,} images could not be read; {args.output} is complete otherwise.")
        return 1
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    from ferlab.inference.batch import DEFAULT_PART_SIZE, DEFAULT_TIMEOUT_S

    batch = sub.add_parser(
        "batch",
        parents=[common],
        help="score many images into a Parquet or CSV file, one row per face, on every core",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Find and classify the faces of many images, in worker processes, into one Parquet or CSV file:\n"
        "path, face (0 = the largest), x, y, w, h, confidence, emotion, a probability per emotion of the model, error.\n"
        "An image without a face gives one row with an empty face; an unreadable one, a row with its error.\n"
        "Parts are written as they finish (OUTPUT.parts/): after Ctrl+C or a kill, the same command resumes.",
        epilog="examples:\n"
        "  ferlab batch photos/ faces.parquet\n"
        '  ferlab batch "shots/**/*.jpg" faces.csv --workers 2\n'
        "  ferlab batch paths.csv faces.parquet            # a CSV with a path column\n"
        "  ferlab batch images.parquet faces.parquet       # encoded images in a binary column (content, image, bytes)",
    )
    batch.add_argument(
        "input", metavar="INPUT", help="a folder (searched recursively), a glob, a CSV of paths, or a Parquet of images or paths"
    )
    batch.add_argument("output", metavar="OUTPUT", help="the .parquet or .csv file to write")
    batch.add_argument(
        "--workers",
        type=positive,
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes, each with its own detector (default: %(default)s, the CPUs)",
    )
    batch.add_argument(
        "--part-size",
        type=positive,
        default=DEFAULT_PART_SIZE,
        metavar="N",
        help="images per part, the unit of resuming (default: %(default)s)",
    )
    batch.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="stop when a worker has been silent this long on one image (default: %(default)g)",
    )
    batch.add_argument("--overwrite", action="store_true", help="score again when OUTPUT exists, dropping an unfinished run's parts")
    batch.add_argument(
        "--face-crop", action="store_true", help="the images already are face crops (FER2013-style): classify them whole, no detection"
    )
    batch.set_defaults(func=cmd_batch)
