"""The `ferlab` command: emotions of the faces in images, video files and live sources
(`detect`, `video`, `webcam`), heat maps of what they rest on (`explain`), the web service
(`serve`), the model on the user's labelled images (`evaluate`, from ferlab.cli_evaluate) and
the model registry (`models`, from ferlab.cli_models).

Heavy libraries (TensorFlow, OpenCV) are imported only by the commands that need
them, so `ferlab --help` answers at once. A FerlabError ends the command with
`error: <message>` on stderr and exit status 1; never a traceback.
"""

import argparse
import csv
import glob
import json
import os
import sys
from pathlib import Path

from ferlab.errors import FerlabError
from ferlab.labelled_set import IMAGE_SUFFIXES  # looked for in folders; --annotate keeps them


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


# ---- detect ---------------------------------------------------------------------------------


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


def _unique(stem: str, suffix: str, used: set[str]) -> str:
    """stem + suffix, or stem_2 + suffix, ...: inputs of the same name from different folders stay apart."""
    name, n = f"{stem}{suffix}", 1
    while name in used:
        n += 1
        name = f"{stem}_{n}{suffix}"
    used.add(name)
    return name


def _inputs(patterns: list[str]) -> tuple[list[str], int]:
    """The files to read, after saying in one line each which patterns found none; and how many did not."""
    files, problems = expand_inputs(patterns)
    for _, message in problems:
        _error(message)
    return files, len(problems)


def _annotated_name(path: str, out_dir: Path, used: set[str]) -> Path:
    p = Path(path)
    return out_dir / _unique(p.stem, p.suffix.lower() if p.suffix.lower() in IMAGE_SUFFIXES else ".png", used)


def _print_table(results: list[dict]) -> None:
    rows = [("file", "face", "x", "y", "w", "h", "emotion", "prob", "confidence")]
    for result in results:
        if "error" in result:
            continue
        if not result["faces"]:
            rows.append((result["path"], "-", "", "", "", "", "no face", "", ""))
        for i, face in enumerate(result["faces"]):
            box = face["box"]
            conf = "" if face["confidence"] is None else f"{face['confidence']:.2f}"
            rows.append(
                (
                    result["path"],
                    str(i),
                    *(str(box[k]) for k in "xywh"),
                    face["emotion"],
                    f"{face['probabilities'][face['emotion']]:.2f}",
                    conf,
                )
            )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _print_csv(results: list[dict]) -> None:
    from ferlab.labels import EMOTIONS

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["path", "face", "x", "y", "w", "h", "confidence", "emotion", *EMOTIONS])
    for result in results:
        for i, face in enumerate(result.get("faces", [])):
            box = face["box"]
            writer.writerow(
                [
                    result["path"],
                    i,
                    *(box[k] for k in "xywh"),
                    "" if face["confidence"] is None else f"{face['confidence']:.4f}",
                    face["emotion"],
                    *(f"{face['probabilities'][e]:.4f}" for e in EMOTIONS),
                ]
            )


def cmd_detect(args) -> int:
    import cv2
    from tqdm import tqdm

    from ferlab.video import draw_faces

    files, unmatched = _inputs(args.paths)
    recognizer = _recognizer(args)
    if args.annotate:
        out_dir = Path(args.annotate)
        out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    results: list[dict] = []
    failed = unmatched
    bar = tqdm(total=len(files), unit="image", disable=len(files) < 2 or args.quiet or None, file=sys.stderr)
    for path, image, found in recognizer.predict_files(files, args.face_crop, on_read=lambda: bar.update(1)):
        if isinstance(found, FerlabError):
            failed += 1
            bar.clear()
            _error(str(found))
            results.append({"path": path, "error": str(found)})
            continue
        results.append({"path": path, "faces": [face.to_dict() for face in found]})
        if args.annotate:
            target = _annotated_name(path, out_dir, used)
            if not cv2.imwrite(str(target), draw_faces(image, found)):
                raise FerlabError(f"cannot write {target}; check that {out_dir} is writable.")
    bar.close()
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    elif args.csv:
        _print_csv(results)
    else:
        _print_table(results)
    if failed:
        _error(f"{failed} of {len(files) + unmatched} inputs failed; the others were processed.")
    return 1 if failed else 0


# ---- explain --------------------------------------------------------------------------------


def _print_explained(results: list[dict]) -> None:
    rows = [("file", "face", "x", "y", "w", "h", "emotion", "prob", "method", "heatmap")]
    for result in results:
        if "error" in result:
            continue
        if not result["faces"]:
            rows.append((result["path"], "-", "", "", "", "", "no face", "", "", ""))
        for i, face in enumerate(result["faces"]):
            box = face["box"]
            rows.append(
                (
                    result["path"],
                    str(i),
                    *(str(box[k]) for k in "xywh"),
                    face["emotion"],
                    f"{face['probabilities'][face['emotion']]:.2f}",
                    face["method"],
                    face["heatmap"],
                )
            )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def cmd_explain(args) -> int:
    import cv2
    from tqdm import tqdm

    from ferlab.explain import choose_method

    files, unmatched = _inputs(args.paths)
    recognizer = _recognizer(args)
    choose_method(args.method, recognizer.classifier)  # an impossible method fails before any image is read
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    results: list[dict] = []
    failed = unmatched
    bar = tqdm(total=len(files), unit="image", disable=len(files) < 2 or args.quiet or None, file=sys.stderr)
    for path in files:
        try:
            explained = recognizer.explain(path, face_crop=args.face_crop, method=args.method)
        except FerlabError as err:
            failed += 1
            bar.clear()
            _error(str(err))
            results.append({"path": path, "error": str(err)})
            bar.update(1)
            continue
        stem = _unique(Path(path).stem, "", used)
        faces = []
        for i, explanation in enumerate(explained):
            target = out_dir / f"{stem}.face{i}.{explanation.method}.png"
            if not cv2.imwrite(str(target), explanation.overlay()):
                raise FerlabError(f"cannot write {target}; check that {out_dir} is writable.")
            faces.append({**explanation.to_dict(), "heatmap": str(target)})
        results.append({"path": path, "faces": faces})
        bar.update(1)
    bar.close()
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        _print_explained(results)
    if failed:
        _error(f"{failed} of {len(files) + unmatched} inputs failed; the others were processed.")
    return 1 if failed else 0


# ---- video and webcam -----------------------------------------------------------------------


def cmd_video(args) -> int:
    from ferlab.video import analyse_video

    path = Path(args.file)
    if not path.is_file():
        raise FerlabError(f"{path}: no such video file; check the path.")
    out_dir = Path(args.out) if args.out else Path(f"{path.stem}_emotions")
    recognizer = _recognizer(args)
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
    from ferlab.video import check_window, run_live

    source = args.source if args.source is not None else args.camera
    output = args.output
    if not args.window and output is None:
        output = "webcam.mp4"
    if args.window:
        check_window()  # before loading the model: fail fast
    recognizer = _recognizer(args)
    summary = run_live(recognizer, source, window=args.window, output=output, max_frames=args.max_frames)
    print(
        f"{summary['frames']} frames in {summary['seconds']} s ({summary['fps']} FPS)"
        + (f"; wrote {summary['output']}" if summary["output"] else "")
    )
    return 0


# ---- web service ----------------------------------------------------------------------------


def cmd_serve(args) -> int:
    from ferlab.serve.model_info import default_source
    from ferlab.serve.server import serve

    serve(
        args.model or default_source(),
        host=args.host,
        port=args.port,
        detector=args.detector,
        align=args.align,
        runtime=args.runtime,
        tta=args.tta,
        max_pixels=args.max_pixels,
        max_upload_mb=args.max_upload_mb,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        access_log=args.access_log,
    )
    return 0


# ---- parser ---------------------------------------------------------------------------------


def _recognizer(args):
    import cv2

    from ferlab.predict import EmotionRecognizer

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our errors say it in one line

    return EmotionRecognizer.load(
        args.model, detector=args.detector, align=args.align, max_pixels=args.max_pixels, runtime=args.runtime, tta=args.tta
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _model_options(group, model_default: str | None, model_default_help: str) -> None:
    """--model, --runtime, --detector, --align and --tta: the same for every command that uses a model."""
    from ferlab.detect import DEFAULT_DETECTOR, DETECTORS
    from ferlab.predict import DEFAULT_TTA, RUNTIMES, TTA_MODES

    group.add_argument(
        "--model",
        default=model_default,
        metavar="SOURCE",
        help="a bundle folder (models/bundle), a .h5 or .tflite file, or a registered model, e.g. "
        f"models:/ferlab-emotion@production {model_default_help}",
    )
    group.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
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
        help="rotate faces so the eyes are level (blazeface and mtcnn; default: as the model was trained)",
    )
    group.add_argument(
        "--tta",
        choices=TTA_MODES,
        default=DEFAULT_TTA,
        help="test-time augmentation: flip averages each face with its mirror image (more accurate, "
        "one batch of twice the faces); none classifies the face alone (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    from ferlab import __version__
    from ferlab.predict import DEFAULT_MAX_PIXELS

    common = argparse.ArgumentParser(add_help=False)
    model = common.add_argument_group("model and detector")
    _model_options(
        model,
        os.environ.get("FERLAB_MODEL"),
        "(default: $FERLAB_MODEL, else models/bundle when the package stage made it, else models/model.h5)",
    )
    model.add_argument(
        "--max-pixels",
        type=_positive,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="refuse images larger than this many pixels (default: %(default)s)",
    )
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    parser = argparse.ArgumentParser(
        prog="ferlab",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Facial emotion recognition (FER2013's 7 emotions) in images, videos and live sources.",
        epilog="Run `ferlab COMMAND --help` for a command's options.\n"
        "The model is models/bundle (or models/model.h5) by default: make it with `dvc repro`.",
    )
    parser.add_argument("--version", action="version", version=f"ferlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    detect = sub.add_parser(
        "detect",
        parents=[common],
        help="faces and emotions in images, folders and globs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Find the faces in images and classify their emotions.\n"
        "Unreadable inputs are reported and skipped; the exit status is 1 if any failed.",
        epilog="examples:\n"
        "  ferlab detect photo.jpg\n"
        "  ferlab detect photos/ --json > faces.json\n"
        '  ferlab detect "shots/*.png" --csv --annotate annotated/\n'
        "  ferlab detect fer_crops/ --face-crop",
    )
    detect.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    output = detect.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON: [{path, faces: [{box, confidence, emotion, probabilities}]}]")
    output.add_argument("--csv", action="store_true", help="print CSV, one row per face")
    detect.add_argument("--annotate", metavar="DIR", help="write copies of the images with boxes and labels to DIR")
    detect.add_argument(
        "--face-crop", action="store_true", help="the images already are face crops (FER2013-style): classify them whole, no detection"
    )
    detect.set_defaults(func=cmd_detect)

    from ferlab.explain import METHODS

    explain = sub.add_parser(
        "explain",
        parents=[common],
        help="heat maps of what each face's emotion rests on",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="For each face in the images, write the face with a heat map over the regions that moved\n"
        "its top emotion (red: most) to --out as <image>.face<N>.<method>.png, N counting from the\n"
        "largest face, and print one line per face. Unreadable inputs are reported and skipped.",
        epilog="methods:\n"
        "  occlusion  hide the face patch by patch (8x8 pixels of the 48x48 input) and measure how much\n"
        "             the top emotion's probability drops; works on every runtime\n"
        "  gradcam    Grad-CAM: the last convolutional feature map weighted by the gradient of the\n"
        "             top emotion; needs the Keras model (--runtime keras)\n"
        "  auto       gradcam when the model runs on Keras, else occlusion\n"
        "examples:\n"
        "  ferlab explain photo.jpg --out heatmaps/\n"
        "  ferlab explain photos/ --method occlusion --json > why.json\n"
        "  ferlab explain photo.jpg --runtime keras --method gradcam",
    )
    explain.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    explain.add_argument("--out", default="heatmaps", metavar="DIR", help="where the face images go (default: %(default)s)")
    explain.add_argument("--method", choices=METHODS, default="auto", help="how the heat map is made (default: %(default)s)")
    explain.add_argument(
        "--json", action="store_true", help="print JSON: [{path, faces: [{box, confidence, emotion, probabilities, method, heatmap}]}]"
    )
    explain.add_argument(
        "--face-crop", action="store_true", help="the images already are face crops (FER2013-style): explain them whole, no detection"
    )
    explain.set_defaults(func=cmd_explain)

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
    video.add_argument("--stride", type=_positive, default=1, metavar="N", help="analyse every Nth frame (default: every frame)")
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
    webcam.add_argument("--max-frames", type=_positive, metavar="N", help="stop after N frames")
    webcam.set_defaults(func=cmd_webcam)

    serve = sub.add_parser(
        "serve",
        help="web service and webcam page (HTTP API: POST /v1/predict, /v1/explain)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the model over HTTP: POST /v1/predict (an image -> faces and emotions as JSON),\n"
        "POST /v1/explain (the same, with a heat map per face as a PNG, like `ferlab explain`),\n"
        "GET /v1/model, /healthz, /readyz, the webcam page at / and the API docs at /docs.\n"
        "The server answers at once; /readyz turns 200 when the model is loaded and warm.",
        epilog="examples:\n"
        "  ferlab serve                                   # then open http://127.0.0.1:8000/\n"
        "  ferlab serve --model models/bundle --port 9000\n"
        "  curl -s -F file=@photo.jpg http://127.0.0.1:8000/v1/predict\n"
        "  curl -s --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/v1/predict\n"
        "  curl -s -F file=@photo.jpg 'http://127.0.0.1:8000/v1/explain?method=occlusion'",
    )
    _model_options(
        serve.add_argument_group("model and detector"),
        None,
        "(default: $FERLAB_MODEL, else models:/ferlab-emotion@production if the registry has it, else models/bundle, else models/model.h5)",
    )
    where = serve.add_argument_group("network and limits")
    where.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)")
    where.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    where.add_argument(
        "--max-pixels",
        type=_positive,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="refuse images larger than this many pixels (default: %(default)s)",
    )
    where.add_argument(
        "--max-upload-mb",
        type=float,
        default=10.0,
        metavar="MB",
        help="refuse request bodies larger than this (HTTP 413) (default: %(default)s)",
    )
    where.add_argument(
        "--max-concurrency",
        type=_positive,
        default=min(4, os.cpu_count() or 1),
        metavar="N",
        help="images decoded and searched for faces at once (threads); faces are classified in "
        "batches by one worker (default: %(default)s, from the CPU count)",
    )
    where.add_argument(
        "--max-queue",
        type=int,
        default=64,
        metavar="N",
        help="requests that may wait beyond those; more are refused with HTTP 503 (default: %(default)s)",
    )
    where.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True, help="log every request (default: on)")
    serve.set_defaults(func=cmd_serve)

    from ferlab import cli_evaluate, cli_models

    cli_evaluate.add_command(sub, common)
    cli_models.add_commands(sub)
    sub.choices["models"].set_defaults(func=cli_models.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FerlabError as err:
        _error(str(err))
        return 1
    except KeyboardInterrupt:
        _error("interrupted.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
