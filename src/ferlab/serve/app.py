"""The FastAPI app of `ferlab serve`.

    POST /v1/predict   an image (multipart field `file`, or the raw bytes) -> faces, boxes, emotions
    POST /v1/explain   the same image input (?method=auto|occlusion|gradcam) -> the faces of /v1/predict,
                       each with `method` and `heatmap_png`: the face with a heat map of what moved its
                       top emotion blended on it, a base64 PNG (ferlab.inference.explain)
    GET  /v1/model     the model served: name, version, alias, source, detector, runtime, tta, emotions, test metrics, limits
    GET  /healthz      200 while the process answers
    GET  /readyz       200 once the model is loaded and warmed up, 503 before (or if loading failed)
    GET  /             the webcam page (static/), GET /docs the OpenAPI documentation

Work per request: the body is read with a size limit, then decoding, face detection and
cropping run in a small thread pool (one detector per thread: OpenCV's cascade is not
thread-safe), and the faces go to the MicroBatcher, whose one worker classifies every
queued face in one model call (for /v1/explain: the face and all its occluded copies, or
the Grad-CAM pass on the model's thread). Requests beyond `max_concurrency` wait, at most
`max_queue` of them; more are refused with 503. Images come from the request body only:
no user-given value is ever used as a server path.
"""

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.serve.batching import MicroBatcher

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "application/octet-stream")
FORM_TYPE = "multipart/form-data"
FORM_FIELD = "file"
STATIC = Path(__file__).parent / "static"
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
log = logging.getLogger("uvicorn.error")


def _fail(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


class Croppers:
    """Decode, detect and crop in a thread pool; each thread has its own copy of the detector."""

    def __init__(self, recognizer, threads: int):
        self._recognizer = recognizer
        self._local = threading.local()
        self.threads = threads
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ferlab-crop")

    def _own(self):
        mine = getattr(self._local, "recognizer", None)
        if mine is None:
            mine = self._local.recognizer = self._recognizer.with_own_detector()
        return mine

    def crops(self, data: bytes):
        """(detections, (N, 48, 48) faces, the decoded BGR image) of encoded image bytes."""
        import cv2

        from ferlab.inference.images import load_image

        recognizer = self._own()
        try:
            image = load_image(data, max_pixels=recognizer.max_pixels)  # bytes only: never a path
        except cv2.error as err:  # OpenCV refused something the header checks let through
            raise FerlabError(f"the image bytes could not be decoded ({str(err).strip().splitlines()[-1]}); send a JPEG or PNG.") from None
        detections, faces = recognizer.crops(image)
        return detections, faces, image

    async def run(self, data: bytes):
        """crops(data) in the pool; a bad image is a 400."""
        try:
            return await self.call(self.crops, data)
        except FerlabError as err:
            raise _fail(400, str(err)) from None

    async def call(self, fn, *args):
        """fn(*args) in the pool: CPU work that must not hold up the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def warm_up(self, data: bytes) -> None:
        """Give every thread its detector now (they wait for each other, so all threads start)."""
        barrier = threading.Barrier(self.threads)

        def one():
            barrier.wait(timeout=120)
            self.crops(data)

        for future in [self.pool.submit(one) for _ in range(self.threads)]:
            future.result()


class Admission:
    """At most `running + waiting` requests at a time; the next one is told to retry (503)."""

    def __init__(self, running: int, waiting: int):
        self.capacity = running + waiting
        self.inside = 0

    def enter(self) -> None:
        if self.inside >= self.capacity:
            raise HTTPException(503, "the server is busy; retry in a moment.", headers={"Retry-After": "1"})
        self.inside += 1

    def leave(self) -> None:
        self.inside -= 1


class Service:
    """The state behind the endpoints: loading, readiness, the pool and the batcher."""

    def __init__(
        self,
        recognizer,
        model_info,
        max_upload_bytes: int,
        max_concurrency: int,
        max_queue: int,
        max_batch: int,
        on_load_error: Callable[[str], None] | None,
    ):
        self._load = recognizer if callable(recognizer) else (lambda: recognizer)
        self._info = model_info if callable(model_info) else (lambda: model_info)
        self.max_upload_bytes = max_upload_bytes
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.admission = Admission(max_concurrency, max_queue)
        self.max_batch = max_batch
        self.on_load_error = on_load_error
        self.recognizer = None
        self.info: dict | None = None
        self.croppers: Croppers | None = None
        self.batcher: MicroBatcher | None = None
        self.ready = False
        self.load_error: str | None = None

    async def start(self) -> None:
        started = time.perf_counter()
        try:
            self.recognizer = await asyncio.to_thread(self._load)
            self.info = dict(await asyncio.to_thread(self._info) or {})
            self.info["detector"] = self.recognizer.detector_name
            self.info["runtime"] = getattr(getattr(self.recognizer, "classifier", None), "runtime", None)
            self.info["tta"] = getattr(self.recognizer, "tta", None)
            self.info["filling_faces"] = bool(getattr(self.recognizer, "fill_pad", 0))
            self.info["emotions"] = list(EMOTIONS)
            self.croppers = Croppers(self.recognizer, self.max_concurrency)
            self.batcher = MicroBatcher(self.recognizer.classify, self.max_batch)
            await self.batcher.start()
            await self._warm_up()
        except Exception as err:  # FerlabError: the user's to fix; anything else: say what broke
            first = (str(err).strip().splitlines() or [""])[0]
            self.load_error = (
                str(err) if isinstance(err, FerlabError) else f"the model could not be loaded ({type(err).__name__}: {first})."
            )
            if self.on_load_error is not None:  # the caller reports it (ferlab serve: one line, exit status 1)
                self.on_load_error(self.load_error)
            else:
                log.error("the model could not be loaded: %s", self.load_error)
            return
        self.ready = True
        log.info(
            "ready: %s (%s runtime, %s detector, %d threads) in %.1f s",
            self.info.get("source", "the model"),
            self.info["runtime"],
            self.recognizer.detector_name,
            self.max_concurrency,
            time.perf_counter() - started,
        )

    async def _warm_up(self) -> None:
        import cv2

        blank = cv2.imencode(".jpg", np.full((240, 320, 3), 128, np.uint8))[1].tobytes()
        await asyncio.to_thread(self.croppers.warm_up, blank)
        from ferlab.contract import IMAGE_SIZE

        await self.batcher.classify(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8))  # traces the model's graph

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        if self.croppers is not None:
            self.croppers.pool.shutdown(wait=False, cancel_futures=True)

    # ---- what every request goes through -----------------------------------------------------

    def limits(self) -> dict:
        return {
            "max_upload_bytes": self.max_upload_bytes,
            "max_pixels": self.recognizer.max_pixels if self.recognizer is not None else None,
            "content_types": [FORM_TYPE, *IMAGE_TYPES],
            "max_concurrency": self.max_concurrency,
            "max_queue": self.max_queue,
        }

    def require_ready(self) -> None:
        if not self.ready:
            detail = "the model is still loading; retry when /readyz answers 200."
            if self.load_error:
                detail = f"the model failed to load: {self.load_error}"
            raise HTTPException(503, detail, headers={"Retry-After": "2"})

    @asynccontextmanager
    async def upload(self, request: Request) -> AsyncIterator[bytes]:
        """The request's image bytes, after the checks every image endpoint makes, while it holds
        a place among the requests admitted."""
        self.require_ready()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != FORM_TYPE and content_type not in IMAGE_TYPES:
            raise _fail(
                415,
                f"unsupported Content-Type {content_type or '(none)'!r}; send an image "
                f"({', '.join(IMAGE_TYPES)}) or a {FORM_TYPE} form with the field `{FORM_FIELD}`.",
            )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_upload_bytes:
            raise _fail(
                413,
                f"the upload ({int(declared):,} bytes) is larger than the limit of {self.max_upload_bytes:,} bytes; send a smaller image.",
            )
        self.admission.enter()
        try:
            yield await _image_bytes(request, content_type, self.max_upload_bytes)
        finally:
            self.admission.leave()

    def answer(self, faces: list[dict], image: np.ndarray, started: float, read: float, detected: float, last: tuple[str, float]) -> dict:
        """The JSON both image endpoints return: the faces, the image size, the model and where the time went."""
        stage, done = last
        return {
            "faces": faces,
            "width": image.shape[1],
            "height": image.shape[0],
            "model": {"name": self.info.get("name"), "version": self.info.get("version")},
            "timing_ms": {
                "read": _ms(started, read),
                "detect": _ms(read, detected),
                stage: _ms(detected, done),
                "total": _ms(started, time.perf_counter()),
            },
        }

    async def heat_maps(self, method: str, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, heat maps) of the faces; the model is used from the batcher's thread only."""
        from ferlab.inference import explain as why

        if method == "occlusion":
            answers = await self.batcher.classify(why.occlusion_inputs(crops))  # the faces and all their copies: one call
            return why.occlusion_maps(answers, len(crops))
        probabilities = await self.batcher.classify(crops)
        maps = await self.batcher.call(
            why.gradcam_maps, self.recognizer.classifier.model, crops, probabilities.argmax(axis=1), self.recognizer.tta
        )
        return probabilities, maps


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:  # stop reading: a huge body is never held whole
            raise _fail(413, f"the upload is larger than the limit of {limit:,} bytes; send a smaller image.")
        yield chunk


async def _image_bytes(request: Request, content_type: str, limit: int) -> bytes:
    """The image of the request: the `file` field of a form, or the whole body."""
    body = _limited(request.stream(), limit)
    if content_type != FORM_TYPE:
        return b"".join([chunk async for chunk in body])
    from starlette.formparsers import MultiPartException, MultiPartParser

    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=16)
    parser.spool_max_size = limit  # keep the file in memory: it is within the limit
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise _fail(400, f"the multipart form is malformed ({err}); send the image in a field named `{FORM_FIELD}`.")
    try:
        upload = form.get(FORM_FIELD)
        if upload is None or isinstance(upload, str):
            raise _fail(400, f"the form has no file field named `{FORM_FIELD}`; send the image as `{FORM_FIELD}`.")
        return await upload.read()
    finally:
        await form.close()


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
        "503": {"description": "the model is still loading, or the server is busy"},
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

    found = explanations(detections, probabilities, maps, method, recognizer.regions(image, detections))
    return [{**e.to_dict(), "heatmap_png": base64.b64encode(cv2.imencode(".png", e.overlay())[1].tobytes()).decode("ascii")} for e in found]


def create_app(
    recognizer,
    *,
    model_info: dict | Callable[[], dict] | None = None,
    max_upload_bytes: int = 10 << 20,
    max_concurrency: int = 2,
    max_queue: int = 64,
    max_batch: int = 256,
    on_load_error: Callable[[str], None] | None = None,
) -> FastAPI:
    """The app serving `recognizer`: an EmotionRecognizer, or a function that loads one.

    The loading (and `model_info`, if a function) runs in a thread once the server has
    started, so /healthz answers at once and /readyz turns 200 when the model is warm.
    `on_load_error(message)` is called if loading fails (the server should then stop).
    """
    service = Service(recognizer, model_info, max_upload_bytes, max_concurrency, max_queue, max_batch, on_load_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(service.start())
        yield
        loading.cancel()
        await asyncio.gather(loading, return_exceptions=True)
        await service.stop()

    app = FastAPI(
        title="ferlab",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Facial emotion recognition: faces, boxes and the probabilities of FER2013's 7 emotions.",
    )
    app.state.service = service
    _image_routes(app, service)
    _status_routes(app, service)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _offline_docs(app)
    return app


def _image_routes(app: FastAPI, service: Service) -> None:
    @app.post("/v1/predict", summary="Faces and their emotions in an image", openapi_extra=PREDICT_DOC)
    async def predict(request: Request) -> dict:
        """JSON: `faces` (largest first; each `Face.to_dict()`: box, confidence, emotion, probabilities),
        the image's `width` and `height`, the `model` and `timing_ms`. No face: an empty list."""
        from ferlab.inference.predict import assemble

        started = time.perf_counter()
        async with service.upload(request) as data:
            read = time.perf_counter()
            detections, crops, image = await service.croppers.run(data)
            detected = time.perf_counter()
            probabilities = await service.batcher.classify(crops) if len(crops) else np.zeros((0, len(EMOTIONS)), np.float32)
            classified = time.perf_counter()
        faces = assemble([detections], probabilities)[0]
        return service.answer([face.to_dict() for face in faces], image, started, read, detected, ("classify", classified))

    @app.post("/v1/explain", summary="Faces, their emotions and heat maps of what each emotion rests on", openapi_extra=EXPLAIN_DOC)
    async def explain(request: Request, method: str = Query("auto", description=METHOD_DOC)) -> dict:
        """JSON as /v1/predict, each face with its `method` and `heatmap_png`: the face as the image shows
        it with the heat map blended on it (red: the regions that moved its top emotion most), a base64 PNG."""
        from ferlab.inference.explain import choose_method

        started = time.perf_counter()
        service.require_ready()
        try:
            used = choose_method(method, service.recognizer.classifier)
        except FerlabError as err:
            raise _fail(400, str(err)) from None
        async with service.upload(request) as data:
            read = time.perf_counter()
            detections, crops, image = await service.croppers.run(data)
            detected = time.perf_counter()
            faces = []
            if len(crops):
                probabilities, maps = await service.heat_maps(used, crops)
                faces = await service.croppers.call(_rendered, service.recognizer, image, detections, probabilities, maps, used)
            explained = time.perf_counter()
        return service.answer(faces, image, started, read, detected, ("explain", explained))


def _status_routes(app: FastAPI, service: Service) -> None:
    @app.get("/v1/model", summary="The model served")
    async def model() -> dict:
        service.require_ready()
        return {**service.info, "limits": service.limits()}

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
