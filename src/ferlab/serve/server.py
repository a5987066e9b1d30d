"""Run the app under uvicorn: bind at once, load the model in the background, exit 1 if it fails."""

import logging
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


def refuse_open_network(host: str, keys, allow_anonymous: bool) -> None:
    from ferlab.serve.access import KEYS_VARIABLE, is_loopback

    if not keys and not is_loopback(host) and not allow_anonymous:
        raise FerlabError(
            f"serving on {host} without API keys would let anyone who reaches the port use it; give --api-key-file "
            f"(or ${KEYS_VARIABLE}), or --allow-anonymous to do it on purpose."
        )


def quiet_access_log(enabled: bool) -> None:
    """One JSON line per request on stderr (ferlab.serve.app's gate writes them), instead of uvicorn's lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log = logging.getLogger("ferlab.access")
    access_log.handlers[:] = [handler]
    access_log.setLevel(logging.INFO if enabled else logging.WARNING)
    access_log.propagate = False


def serve(
    source: str,
    *,
    options=None,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings=None,
    api_key_file: str | None = None,
    allow_anonymous: bool = False,
    access_log: bool = True,
    face_log: str | None = None,
) -> None:
    """Serve `source` with the recognizer `options` (ferlab.inference.options.RecognizerOptions) under the
    service `settings` (ferlab.serve.service.ServiceSettings; its keys come from `api_key_file` and $FERLAB_API_KEYS)."""
    import dataclasses

    import uvicorn

    from ferlab.serve.access import ApiKeys, is_loopback
    from ferlab.serve.app import create_app
    from ferlab.serve.model_info import describe, source_token
    from ferlab.serve.service import ServiceSettings

    settings = settings or ServiceSettings()
    if settings.max_upload_bytes <= 0 or settings.max_queue < 0:
        raise FerlabError("--max-upload-mb must be above 0 and --max-queue 0 or more.")
    keys = ApiKeys.load(api_key_file)
    refuse_open_network(host, keys, allow_anonymous)
    settings = dataclasses.replace(settings, api_keys=keys, admin_open=not keys and is_loopback(host))
    check_source(source)
    check_port(host, port)
    log_of_faces = None
    if face_log:
        from ferlab.serve.face_log import FaceLog

        log_of_faces = FaceLog(face_log)
    guarded = f", {len(keys.names)} API key(s)" if keys else ""
    print(f"serving {source} on http://{host}:{port}/ (the page at /, the API docs at /docs{guarded})", file=sys.stderr, flush=True)
    server: uvicorn.Server | None = None

    def stop(_message: str) -> None:
        server.should_exit = True

    app = create_app(
        lambda: _load(source, options),
        model_info=lambda: describe(source),
        settings=settings,
        on_load_error=stop,
        watch=lambda: source_token(source),
        face_log=log_of_faces,
    )
    quiet_access_log(access_log)
    # asyncio and h11 whatever else is installed (uvloop and httptools come with some extras): one behaviour, as tested
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="info", loop="asyncio", http="h11")
    server = uvicorn.Server(config)
    server.run()
    error = app.state.service.load_error
    if error:
        raise FerlabError(error)


def _load(source: str, options):
    import dataclasses

    from ferlab.inference.predict import EmotionRecognizer

    return EmotionRecognizer.load(source) if options is None else dataclasses.replace(options, model=source).load()
