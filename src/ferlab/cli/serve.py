"""`ferlab serve`: the web service and the webcam page."""

import argparse
import os

from ferlab.cli.common import model_options, positive


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
        filling_faces=args.filling_faces,
        max_pixels=args.max_pixels,
        max_upload_mb=args.max_upload_mb,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        access_log=args.access_log,
    )
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    from ferlab.inference.images import DEFAULT_MAX_PIXELS

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
    model_options(serve.add_argument_group("model and detector"))
    where = serve.add_argument_group("network and limits")
    where.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)")
    where.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    where.add_argument(
        "--max-pixels",
        type=positive,
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
        type=positive,
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
