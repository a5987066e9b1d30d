"""`ferlab video` and `ferlab webcam`: emotions over time in a video file or a live source."""

import argparse
from pathlib import Path

from ferlab.cli.common import load_recognizer, positive
from ferlab.errors import FerlabError


def cmd_video(args) -> int:
    from ferlab.inference.video import analyse_video

    path = Path(args.file)
    if not path.is_file():
        raise FerlabError(f"{path}: no such video file; check the path.")
    out_dir = Path(args.out) if args.out else Path(f"{path.stem}_emotions")
    recognizer = load_recognizer(args)
    summary = analyse_video(recognizer, path, out_dir, stride=args.stride, progress=not args.quiet)
    if summary["dominant_emotion"] is None:
        print(f"{path}: no face found in {summary['analysed_frames']} analysed frames.")
    else:
        mean = summary["mean_probabilities"]
        print(
            f"{path}: dominant emotion {summary['dominant_emotion']} ({mean[summary['dominant_emotion']]:.0%} on average); "
            f"{summary['frames_with_faces']} of {summary['analysed_frames']} analysed frames with faces, "
            f"{summary['faces_tracked']} face(s) tracked."
        )
    for name, output in summary["outputs"].items():
        print(f"  {name}: {output}")
    return 0


def cmd_webcam(args) -> int:
    from ferlab.inference.video import check_window, run_live

    source = args.source if args.source is not None else args.camera
    output = args.output
    if not args.window and output is None:
        output = "webcam.mp4"
    if args.window:
        check_window()  # before loading the model: fail fast
    recognizer = load_recognizer(args)
    summary = run_live(recognizer, source, window=args.window, output=output, max_frames=args.max_frames)
    print(
        f"{summary['frames']} frames in {summary['seconds']} s ({summary['fps']} FPS)"
        + (f"; wrote {summary['output']}" if summary["output"] else "")
    )
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    video = sub.add_parser(
        "video",
        parents=[common],
        help="emotions over time in a video file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Analyse a video file. Writes to --out: <name>.csv (one row per face and frame: time,\n"
        "face index, box, probabilities), <name>.annotated.mp4, <name>.timeline.png and\n"
        "<name>.summary.json, and prints the dominant emotion of the whole video.",
        epilog="example:\n  ferlab video interview.mp4 --stride 5 --out results/",
    )
    video.add_argument("file", metavar="FILE", help="the video file")
    video.add_argument("--stride", type=positive, default=1, metavar="N", help="analyse every Nth frame (default: every frame)")
    video.add_argument("--out", metavar="DIR", help="output folder (default: ./<FILE name>_emotions)")
    video.set_defaults(func=cmd_video)

    webcam = sub.add_parser(
        "webcam",
        parents=[common],
        help="live demo: a camera, stream or video file in a window",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Show a live source with boxes, emotions, probabilities and FPS; press q to quit.\n"
        "With --no-window, write what the window would show to a video file (Ctrl+C stops).",
        epilog="examples:\n"
        "  ferlab webcam\n"
        "  ferlab webcam --camera 1 --detector mtcnn\n"
        "  ferlab webcam --source rtsp://camera.local/stream\n"
        "  ferlab webcam --source clip.mp4 --no-window --output annotated.mp4",
    )
    where = webcam.add_mutually_exclusive_group()
    where.add_argument("--camera", type=int, default=0, metavar="N", help="camera index (default: %(default)s)")
    where.add_argument("--source", metavar="URL_OR_FILE", help="a stream URL (rtsp://, http://) or a video file instead of a camera")
    webcam.add_argument(
        "--window", action=argparse.BooleanOptionalAction, default=True, help="show an OpenCV window (default); --no-window runs headless"
    )
    webcam.add_argument(
        "--output", metavar="FILE", help="also write the annotated frames to FILE (.mp4 or .avi; default with --no-window: webcam.mp4)"
    )
    webcam.add_argument("--max-frames", type=positive, metavar="N", help="stop after N frames")
    webcam.set_defaults(func=cmd_webcam)
