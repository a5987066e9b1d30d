"""The FastAPI app of `ferlab serve`.

    POST /v1/predict        an image (multipart field `file`, or the raw bytes) -> faces, boxes, emotions
    POST /v1/explain        the same image input (?method=auto|occlusion|gradcam) -> the faces of /v1/predict,
                            each with `method` and `heatmap_png`: the face with a heat map of what moved its
                            top emotion blended on it, a base64 PNG (ferlab.inference.explain)
    GET  /v1/model          the model served: name, version, alias, source, detector, runtime, tta, emotions,
                            test metrics, limits, the last reload
    POST /v1/admin/reload   load the model source again now (a promoted version), swap it in when warm
    GET  /metrics           Prometheus metrics
    GET  /healthz           200 while the process answers
    GET  /readyz            200 once the model is loaded and warmed up, 503 before (or if loading failed)
    GET  /                  the webcam page (static/), GET /docs the OpenAPI documentation

Work per request: the body is read with a size limit, then decoding, face detection and
cropping run in a small thread pool (one detector per thread: OpenCV's cascade is not
thread-safe), and the faces go to the MicroBatcher, whose one worker classifies every
queued face in one model call (for /v1/explain: the face and all its occluded copies, or
the Grad-CAM pass on the model's thread). Requests beyond `max_concurrency` wait, at most
`max_queue` of them; more are refused with 503. Images come from the request body only:
no user-given value is ever used as a server path.

Before any of that, every request goes through ferlab.serve.gate: its request id, the API key
(when the server has keys), the client's rate limit; on the way out the security headers, the
metrics and one JSON line of access log.
"""

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.serve import access
from ferlab.serve.gate import Gate
from ferlab.serve.metrics import CONTENT_TYPE
from ferlab.serve.service import Service, ServiceSettings, fail
from ferlab.serve.uploads import FORM_FIELD, FORM_TYPE, IMAGE_TYPES, content_type_of, image_bytes

STATIC = Path(__file__).parent / "static"
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "description": f"An image: a multipart form with the file in the field `{FORM_FIELD}`, or the raw bytes.",
        "content": {
            FORM_TYPE: {
                "schema": {"type": "object", "required": [FORM_FIELD], "properties": {FORM_FIELD: {"type": "string", "format": "binary"}}}
            },
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
        },
    },
    "responses": {
        "400": {"description": "not a readable image (corrupt, truncated, empty, not an image), too many pixels, or a bad form"},
        "413": {"description": "the upload is larger than the limit"},
        "415": {"description": "the Content-Type is not one of the accepted ones"},
        "401": {"description": "the server wants an API key (Authorization: Bearer KEY) and none or a wrong one came"},
        "429": {"description": "this client (its key, else its address) is over its rate limit; Retry-After says when to retry"},
        "503": {"description": "the model is still loading, the server is busy, or the request took longer than its time limit"},
    },
}


METHOD_DOC = (
    "occlusion (every runtime), gradcam (needs a Keras model: --runtime keras) or auto: gradcam "
    "where the model runs on Keras, else occlusion"
)
EXPLAIN_DOC = {
    **PREDICT_DOC,
    "responses": {
        **PREDICT_DOC["responses"],
        "400": {
            "description": PREDICT_DOC["responses"]["400"]["description"] + "; an unknown method, or gradcam on a model served by LiteRT"
        },
    },
}


def _rendered(recognizer, image: np.ndarray, detections, probabilities: np.ndarray, maps: np.ndarray, method: str) -> list[dict]:
    """The faces of /v1/explain, largest first: Face.to_dict(), `method` and the overlay as a base64 PNG."""
    import base64

    import cv2

    from ferlab.inference.predict import explanations

    emotions = tuple(getattr(recognizer, "emotions", None) or EMOTIONS)
    found = explanations(detections, probabilities, maps, method, recognizer.regions(image, detections), emotions)
    return [{**e.to_dict(), "heatmap_png": base64.b64encode(cv2.imencode(".png", e.overlay())[1].tobytes()).decode("ascii")} for e in found]


def create_app(
    recognizer,
    *,
    model_info: dict | Callable[[], dict] | None = None,
    settings: ServiceSettings | None = None,
    on_load_error: Callable[[str], None] | None = None,
    watch: Callable[[], object] | None = None,
    face_log=None,
) -> FastAPI:
    """The app serving `recognizer`: an EmotionRecognizer, or a function that loads one.

    The loading (and `model_info`, if a function) runs in a thread once the server has
    started, so /healthz answers at once and /readyz turns 200 when the model is warm.
    `on_load_error(message)` is called if the first load fails (the server should then stop).
    `watch()` tells what the model source looks like now (a registry version, a file's time):
    with `settings.reload_interval_s` the service loads the source again when that changes.
    `face_log`: a FaceLog that keeps a summary of every face answered (`ferlab monitor`).
    """
    settings = settings or ServiceSettings()
    service = Service(recognizer, model_info, settings, on_load_error, watch)
    service.face_log = face_log
    limits = access.RateLimits({"predict": settings.rate_limit, "explain": settings.explain_rate_limit})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(service.start())]
        if settings.reload_interval_s:
            tasks.append(asyncio.create_task(service.watch()))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await service.stop()
        if face_log is not None:
            await asyncio.to_thread(face_log.close)

    app = FastAPI(
        title="ferlab",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Facial emotion recognition: faces, boxes and the probabilities of FER2013's 7 emotions.",
    )
    app.state.service = service
    routes: set[str] = set()  # filled below, once every route is there
    app.add_middleware(Gate, service=service, limits=limits, routes=routes)
    if settings.cors_origins:  # outside the gate: preflights are answered before it, refusals get CORS headers
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Model-Version", "Retry-After"],
        )
    _image_routes(app, service)
    _status_routes(app, service)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _offline_docs(app)
    routes.update(getattr(route, "path", "") for route in app.routes)
    return app


def _largest(detections: list, crops: np.ndarray, cap: int) -> tuple[list, np.ndarray, int]:
    """At most `cap` faces, the largest; and how many were left out."""
    if len(detections) <= cap:
        return detections, crops, 0
    keep = sorted(sorted(range(len(detections)), key=lambda i: -detections[i].box[2] * detections[i].box[3])[:cap])
    return [detections[i] for i in keep], crops[keep], len(detections) - cap


def _answer(generation, faces: list[dict], omitted: int, image: np.ndarray, times: dict) -> JSONResponse:
    """The JSON both image endpoints return: the faces, the image size, the model and where the time went."""
    body = {
        "faces": faces,
        "width": image.shape[1],
        "height": image.shape[0],
        "model": {"name": generation.info.get("name"), "version": generation.version},
        "timing_ms": times,
    }
    if omitted:
        body["faces_omitted"] = omitted
    return JSONResponse(body, headers={"X-Model-Version": str(generation.version)} if generation.version is not None else None)


class _Clock:
    def __init__(self):
        self.started = self.last = time.perf_counter()
        self.times: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.times[stage] = _ms(self.last, now)
        self.last = now

    def total(self) -> dict:
        return {**self.times, "total": _ms(self.started, time.perf_counter())}


@asynccontextmanager
async def _time_limit(seconds: float):
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise fail(503, f"the request took longer than the limit of {seconds:g} s; retry, or send a smaller image.", **{"Retry-After": "1"})


def _image_routes(app: FastAPI, service: Service) -> None:
    settings = service.settings

    @app.post("/v1/predict", summary="Faces and their emotions in an image", openapi_extra=PREDICT_DOC)
    async def predict(request: Request):
        """JSON: `faces` (largest first; each `Face.to_dict()`: box, confidence, emotion, probabilities),
        the image's `width` and `height`, the `model` that answered and `timing_ms`; `faces_omitted` when the
        image held more faces than the server's limit (the largest are answered). No face: an empty list."""
        from ferlab.inference.predict import assemble

        clock = _Clock()
        service.require_ready()
        content_type = content_type_of(request, settings.max_upload_bytes)
        async with _time_limit(settings.request_timeout_s), service.admitted() as generation:
            data = await image_bytes(request, content_type, settings.max_upload_bytes)
            clock.lap("read")
            detections, crops, image = await generation.croppers.run(data)
            detections, crops, omitted = _largest(detections, crops, settings.max_faces)
            clock.lap("detect")
            emotions = generation.emotions
            probabilities = await generation.batcher.classify(crops) if len(crops) else np.zeros((0, len(emotions)), np.float32)
            clock.lap("classify")
            if service.face_log is not None:  # queues copies of the faces; the log's own thread writes them
                service.face_log.observe(generation.recognizer, detections, crops, probabilities, generation.version)
        service.metrics.answered(generation.version, probabilities, emotions)
        request.state.faces, request.state.model_version = len(crops), generation.version
        faces = assemble([detections], probabilities, emotions)[0]
        return _answer(generation, [face.to_dict() for face in faces], omitted, image, clock.total())

    @app.post("/v1/explain", summary="Faces, their emotions and heat maps of what each emotion rests on", openapi_extra=EXPLAIN_DOC)
    async def explain(request: Request, method: str = Query("auto", description=METHOD_DOC)):
        """JSON as /v1/predict, each face with its `method` and `heatmap_png`: the face as the image shows
        it with the heat map blended on it (red: the regions that moved its top emotion most), a base64 PNG.
        At most the server's `max_explain_faces` faces (the largest) and `max_explain_pixels` pixels."""
        from ferlab.inference.explain import choose_method

        clock = _Clock()
        service.require_ready()
        try:
            used = choose_method(method, service.current.recognizer.classifier)
        except FerlabError as err:
            raise fail(400, str(err)) from None
        content_type = content_type_of(request, settings.max_upload_bytes)
        async with _time_limit(settings.request_timeout_s), service.admitted() as generation:
            data = await image_bytes(request, content_type, settings.max_upload_bytes)
            clock.lap("read")
            detections, crops, image = await generation.croppers.run(data, settings.max_explain_pixels)
            detections, crops, omitted = _largest(detections, crops, settings.max_explain_faces)
            clock.lap("detect")
            faces = []
            if len(crops):
                probabilities, maps = await _heat_maps(generation, used, crops)
                faces = await generation.croppers.call(_rendered, generation.recognizer, image, detections, probabilities, maps, used)
            clock.lap("explain")
        request.state.faces, request.state.model_version = len(crops), generation.version
        return _answer(generation, faces, omitted, image, clock.total())


async def _heat_maps(generation, method: str, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, heat maps) of the faces, on the model's thread (between two batches)."""
    from ferlab.inference.explain import heat_maps

    return await generation.batcher.call(heat_maps, generation.recognizer, crops, method)


def _status_routes(app: FastAPI, service: Service) -> None:
    @app.get("/v1/model", summary="The model served")
    async def model() -> dict:
        service.require_ready()
        return {
            **service.current.info,
            "limits": service.limits(),
            "reload": {"interval_s": service.settings.reload_interval_s, "last": service.last_reload},
        }

    @app.post("/v1/admin/reload", summary="Load the model source again now and swap it in once warm")
    async def reload(request: Request, force: bool = Query(True, description="load even if the source looks unchanged")):
        """`outcome`: swapped (the new version answers from now on; requests in flight finish on the old one),
        unchanged, or failed (the old version goes on serving; `error` says why, with status 503)."""
        if not service.settings.admin_open and getattr(request.state, "key", None) is None:
            raise fail(403, "reloading needs an API key; start the server with --api-key-file or $FERLAB_API_KEYS.")
        service.require_ready()
        outcome = await service.reload(force)
        return JSONResponse(outcome, status_code=503 if outcome["outcome"] == "failed" else 200)

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        if service.current is not None:
            service.metrics.queued_faces.set(service.current.batcher.queued)
        return Response(service.metrics.text(), media_type=CONTENT_TYPE)

    @app.get("/healthz", summary="Liveness: 200 while the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: 200 once the model is loaded and warm, 503 before")
    async def readyz():
        if service.ready:
            return {"status": "ready"}
        if service.load_error:
            return JSONResponse({"status": "failed", "detail": service.load_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)


def _offline_docs(app) -> None:
    """/docs with Swagger UI's files served from the `swagger-ui-bundle` package: FastAPI's
    default page loads them from a CDN, which leaves /docs blank on an air-gapped site."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 1)


def _version() -> str:
    from ferlab import __version__

    return __version__
