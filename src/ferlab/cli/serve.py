"""`ferlab serve`: the web service and the webcam page."""

import argparse
import os

from ferlab.cli.common import model_options, positive


def cmd_serve(args) -> int:
    from ferlab.inference.options import RecognizerOptions
    from ferlab.serve.model_info import default_source
    from ferlab.serve.server import serve
    from ferlab.serve.service import ServiceSettings

    settings = ServiceSettings(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        max_faces=args.max_faces,
        max_explain_faces=args.max_explain_faces,
        max_explain_pixels=args.max_explain_pixels,
        request_timeout_s=args.request_timeout,
        rate_limit=_limit(args.rate_limit),
        explain_rate_limit=_limit(args.explain_rate_limit),
        reload_interval_s=args.reload_interval or None,
        cors_origins=tuple(args.cors_origin or ()),
    )
    serve(
        args.model or default_source(),
        options=RecognizerOptions.from_args(args),
        host=args.host,
        port=args.port,
        settings=settings,
        api_key_file=args.api_key_file,
        allow_anonymous=args.allow_anonymous,
        access_log=args.access_log,
        face_log=args.face_log,
    )
    return 0


def _limit(text: str) -> str | None:
    return None if text.strip().lower() in ("", "none", "off") else text


def add_command(sub, common: argparse.ArgumentParser) -> None:
    from ferlab.inference.images import DEFAULT_MAX_PIXELS
    from ferlab.serve.access import KEYS_VARIABLE

    serve = sub.add_parser(
        "serve",
        help="web service and webcam page (HTTP API: POST /v1/predict, /v1/explain)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the model over HTTP: POST /v1/predict (an image -> faces and emotions as JSON),\n"
        "POST /v1/explain (the same, with a heat map per face as a PNG, like `ferlab explain`),\n"
        "GET /v1/model, /metrics (Prometheus), /healthz, /readyz, POST /v1/admin/reload, the webcam page at /\n"
        "and the API docs at /docs.\n"
        "The server answers at once; /readyz turns 200 when the model is loaded and warm.",
        epilog="examples:\n"
        "  ferlab serve                                   # then open http://127.0.0.1:8000/\n"
        "  ferlab serve --model models/bundle --port 9000\n"
        "  curl -s -F file=@photo.jpg http://127.0.0.1:8000/v1/predict\n"
        "  curl -s --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/v1/predict\n"
        "  curl -s -F file=@photo.jpg 'http://127.0.0.1:8000/v1/explain?method=occlusion'\n"
        "  ferlab serve --host 0.0.0.0 --api-key-file keys.txt   # then: curl -H 'Authorization: Bearer KEY' ...",
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
    where.add_argument(
        "--max-faces", type=positive, default=64, metavar="N", help="faces classified per image, the largest (default: %(default)s)"
    )
    where.add_argument(
        "--max-explain-faces", type=positive, default=4, metavar="N", help="faces explained per image, the largest (default: %(default)s)"
    )
    where.add_argument(
        "--max-explain-pixels",
        type=positive,
        default=4_000_000,
        metavar="N",
        help="larger images refused by /v1/explain (default: %(default)s)",
    )
    where.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="503 for a request not done in this time (default: %(default)s)",
    )
    guard = serve.add_argument_group("access, monitoring and reloads")
    guard.add_argument(
        "--api-key-file",
        metavar="FILE",
        help=f"API keys, one per line (or name:key); clients send `Authorization: Bearer KEY`. Keys in ${KEYS_VARIABLE} "
        "(comma-separated) are added. /healthz, /readyz and the page stay open",
    )
    guard.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve a non-loopback --host without API keys (refused otherwise)",
    )
    guard.add_argument(
        "--rate-limit",
        default="1200/minute",
        metavar="N/PERIOD",
        help="POST /v1/predict per client (its key, else its address), HTTP 429 beyond; none for no limit (default: %(default)s)",
    )
    guard.add_argument(
        "--explain-rate-limit",
        default="60/minute",
        metavar="N/PERIOD",
        help="POST /v1/explain per client (default: %(default)s)",
    )
    guard.add_argument(
        "--cors-origin",
        action="append",
        metavar="URL",
        help="let pages of this origin call the API (repeat for several); none by default",
    )
    guard.add_argument(
        "--reload-interval",
        type=float,
        default=30.0,
        metavar="S",
        help="look this often for a new model (a promoted version, a rewritten bundle) and swap it in "
        "once warm; 0: only on POST /v1/admin/reload (default: %(default)s)",
    )
    guard.add_argument(
        "--face-log",
        metavar="FILE",
        help="append a summary of every face answered to this JSONL file (probabilities, face size, brightness, "
        "sharpness, an embedding; never the image), rotated at 64 MB: what `ferlab monitor` compares with the test faces",
    )
    guard.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one JSON line per request on stderr, with its X-Request-ID (default: on)",
    )
    serve.set_defaults(func=cmd_serve)
