"""The `ferlab` command: emotions of the faces in images, video files and live sources
(`detect`, `video`, `webcam`), of many images on every core into a Parquet or CSV file
(`batch`), heat maps of what they rest on (`explain`), the web service (`serve`), the drift of
what it saw from PrivateTest (`monitor`, from ferlab.cli.monitor), the model on
the user's labelled images (`evaluate`, from ferlab.cli.evaluate), fine-tuned on them (`adapt`, from
ferlab.cli.adapt) and the model registry (`models`, from ferlab.cli.models).

Heavy libraries (TensorFlow, OpenCV) are imported only by the commands that need
them, so `ferlab --help` answers at once. A FerlabError ends the command with
`error: <message>` on stderr and exit status 1; never a traceback.
"""

import argparse

from ferlab.cli import adapt, batch, detect, evaluate, explain, models, monitor, serve, video
from ferlab.cli.common import common_parser, error
from ferlab.errors import FerlabError

COMMAND_GROUPS = (detect, batch, explain, video, serve, monitor, evaluate, adapt, models)


def build_parser() -> argparse.ArgumentParser:
    from ferlab import __version__

    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="ferlab",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Facial emotion recognition (FER2013's 7 emotions) in images, videos and live sources.",
        epilog="Run `ferlab COMMAND --help` for a command's options.\n"
        "The model: --model, else $FERLAB_MODEL, else the registry's production model, else models/bundle,\n"
        "else the model shipped with ferlab (pretrained:fast, pretrained:accurate).",
    )
    parser.add_argument("--version", action="version", version=f"ferlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_command(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FerlabError as err:
        error(str(err))
        return 1
    except KeyboardInterrupt:
        error("interrupted.")
        return 130
