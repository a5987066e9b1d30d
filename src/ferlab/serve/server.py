"""Run the app under uvicorn: bind at once, load the model in the background, exit 1 if it fails."""

import socket
import sys
from pathlib import Path

from ferlab.errors import FerlabError


def check_source(source: str) -> None:
    """A missing file or folder, or a shipped model that is not shipped or damaged, is reported before the server
    starts (registry URIs are checked when loading)."""
    from ferlab.inference.sources import missing_model
    from ferlab.lifecycle import pretrained
    from ferlab.lifecycle.registry import is_uri

    if pretrained.is_uri(source):
        pretrained.verified_folder(source)
    elif not is_uri(source) and not Path(source).exists():
        raise missing_model(source)


def check_port(host: str, port: int) -> None:
    try:
        with socket.create_server((host, port)):
            pass
    except (OSError, OverflowError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise FerlabError(f"cannot listen on {host}:{port} ({reason}); choose another --port or --host.") from None


def serve(
    source: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    detector: str | None = None,
    align: bool | None = None,
    runtime: str = "auto",
    tta: str | None = None,
    filling_faces: bool = True,
    max_pixels: int | None = None,
    max_upload_mb: float = 10,
    max_concurrency: int = 2,
    max_queue: int = 64,
    access_log: bool = True,
) -> None:
    import uvicorn

    from ferlab.inference.detect import DEFAULT_DETECTOR
    from ferlab.inference.images import DEFAULT_MAX_PIXELS
    from ferlab.inference.predict import DEFAULT_TTA, EmotionRecognizer, fill_pad_of
    from ferlab.serve.app import create_app
    from ferlab.serve.model_info import describe

    if max_upload_mb <= 0 or max_queue < 0:
        raise FerlabError("--max-upload-mb must be above 0 and --max-queue 0 or more.")
    detector = detector or DEFAULT_DETECTOR
    check_source(source)
    check_port(host, port)
    print(f"serving {source} on http://{host}:{port}/ (the page at /, the API docs at /docs)", file=sys.stderr, flush=True)
    server: uvicorn.Server | None = None

    def stop(_message: str) -> None:
        server.should_exit = True

    app = create_app(
        lambda: EmotionRecognizer.load(
            source,
            detector=detector,
            align=align,
            runtime=runtime,
            max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
            tta=tta or DEFAULT_TTA,
            fill_pad=fill_pad_of(filling_faces),
        ),
        model_info=lambda: describe(source),
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        on_load_error=stop,
    )
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=access_log, log_level="info"))
    server.run()
    error = app.state.service.load_error
    if error:
        raise FerlabError(error)
