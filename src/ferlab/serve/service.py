"""The state behind the endpoints: the model served, its worker threads, admission, and live reloads.

A loaded model and what serves it (its crop threads and its micro-batcher) make a Generation.
A request takes the current generation when it starts and uses it to the end, so a reload can
load and warm the next model beside the old one and swap them in one assignment: requests in
flight finish on the version they started with, the old generation stops when its last request
has left, and if the new model fails to load the old one goes on serving.
"""

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import numpy as np
from fastapi import HTTPException

from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.serve.access import ApiKeys
from ferlab.serve.batching import MicroBatcher
from ferlab.serve.metrics import ServiceMetrics

log = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class ServiceSettings:
    """What `ferlab serve`'s network and limit options set."""

    max_upload_bytes: int = 10 << 20
    max_concurrency: int = 2  # images decoded and searched for faces at once
    max_queue: int = 64  # requests that may wait beyond those
    max_batch: int = 256  # faces per model call
    max_faces: int = 64  # faces classified per image (the largest); more are counted in `faces_omitted`
    max_explain_faces: int = 4  # faces explained per image: 121-242 model inputs each
    max_explain_pixels: int = 4_000_000
    request_timeout_s: float = 30.0
    rate_limit: str | None = None  # per client (key, else address), e.g. "1200/minute"
    explain_rate_limit: str | None = None
    reload_interval_s: float | None = None  # look for a new model this often (a moved alias, a rewritten file)
    api_keys: ApiKeys = field(default_factory=lambda: ApiKeys({}))
    cors_origins: tuple[str, ...] = ()
    admin_open: bool = True  # POST /v1/admin/reload without a key: only on a loopback address without keys


def fail(status: int, message: str, **headers: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers or None)


def first_line(err: BaseException) -> str:
    """A loading error as one sentence: a FerlabError is the user's to fix; anything else says what broke."""
    if isinstance(err, FerlabError):
        return str(err)
    first = (str(err).strip().splitlines() or [""])[0]
    return f"the model could not be loaded ({type(err).__name__}: {first})."


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

    def crops(self, data: bytes, max_pixels: int | None = None):
        """(detections, (N, 48, 48) faces, the decoded BGR image) of encoded image bytes; `max_pixels`:
        a lower limit than the recognizer's, /v1/explain's."""
        import cv2

        from ferlab.inference.images import decode

        recognizer = self._own()
        lower = max_pixels is not None and max_pixels < recognizer.max_pixels
        try:  # bytes only: never a path
            if lower:
                image = decode(data, "the image bytes", max_pixels, "--max-explain-pixels")
            else:
                image = decode(data, "the image bytes", recognizer.max_pixels)
        except cv2.error as err:  # OpenCV refused something the header checks let through
            raise FerlabError(f"the image bytes could not be decoded ({str(err).strip().splitlines()[-1]}); send a JPEG or PNG.") from None
        detections, faces = recognizer.crops(image)
        return detections, faces, image

    async def run(self, data: bytes, max_pixels: int | None = None):
        """crops(data) in the pool; a bad image is a 400."""
        try:
            return await self.call(self.crops, data, max_pixels)
        except FerlabError as err:
            raise fail(400, str(err)) from None

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
            raise fail(503, "the server is busy; retry in a moment.", **{"Retry-After": "1"})
        self.inside += 1

    def leave(self) -> None:
        self.inside -= 1


class Generation:
    """One loaded model with its info, crop threads and batcher."""

    def __init__(self, recognizer, info: dict, token, settings: ServiceSettings, metrics: ServiceMetrics):
        self.recognizer = recognizer
        self.info = info
        self.token = token  # what the source looked like when loaded (a registry version, a file's time)
        self.croppers = Croppers(recognizer, settings.max_concurrency)
        self.batcher = MicroBatcher(recognizer.classify, settings.max_batch, on_batch=metrics.batch_size.observe)
        self.users = 0
        self.retired = False

    @property
    def emotions(self) -> tuple[str, ...]:
        return tuple(self.info["emotions"])

    @property
    def version(self):
        return self.info.get("version")

    async def start(self) -> None:
        import cv2

        from ferlab.contract import IMAGE_SIZE

        await self.batcher.start()
        blank = cv2.imencode(".jpg", np.full((240, 320, 3), 128, np.uint8))[1].tobytes()
        await asyncio.to_thread(self.croppers.warm_up, blank)
        await self.batcher.classify(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8))  # traces the model's graph

    async def stop(self) -> None:
        await self.batcher.stop()
        self.croppers.pool.shutdown(wait=False, cancel_futures=True)


class Service:
    """Loading, readiness, admission and reloads."""

    def __init__(
        self,
        recognizer,
        model_info,
        settings: ServiceSettings,
        on_load_error: Callable[[str], None] | None = None,
        watch: Callable[[], object] | None = None,
    ):
        self._load = recognizer if callable(recognizer) else (lambda: recognizer)
        self._info = model_info if callable(model_info) else (lambda: model_info)
        self._watch = watch or (lambda: None)
        self.settings = settings
        self.admission = Admission(settings.max_concurrency, settings.max_queue)
        self.metrics = ServiceMetrics()
        self.on_load_error = on_load_error
        self.current: Generation | None = None
        self.ready = False
        self.load_error: str | None = None
        self.last_reload: dict | None = None  # when, outcome, versions, error: what GET /v1/model shows
        self._reloading = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()

    async def _generation(self) -> Generation:
        try:
            token = await asyncio.to_thread(self._watch)
        except Exception:  # the load below says what is wrong with the source
            token = None
        recognizer = await asyncio.to_thread(self._load)
        info = dict(await asyncio.to_thread(self._info) or {})
        info["detector"] = recognizer.detector_name
        info["runtime"] = getattr(getattr(recognizer, "classifier", None), "runtime", None)
        info["tta"] = getattr(recognizer, "tta", None)
        info["filling_faces"] = bool(getattr(recognizer, "fill_pad", 0))
        info["emotions"] = list(getattr(recognizer, "emotions", EMOTIONS))  # the bundle's declared emotions (ferlab adapt --emotions)
        generation = Generation(recognizer, info, token, self.settings, self.metrics)
        try:
            await generation.start()
        except BaseException:
            await generation.stop()
            raise
        return generation

    async def start(self) -> None:
        started = time.perf_counter()
        try:
            self.current = await self._generation()
        except Exception as err:
            self.load_error = first_line(err)
            if self.on_load_error is not None:  # the caller reports it (ferlab serve: one line, exit status 1)
                self.on_load_error(self.load_error)
            else:
                log.error("the model could not be loaded: %s", self.load_error)
            return
        self.metrics.serving(self.current.info)
        self.ready = True
        log.info(
            "ready: %s (%s runtime, %s detector, %d threads) in %.1f s",
            self.current.info.get("source", "the model"),
            self.current.info["runtime"],
            self.current.recognizer.detector_name,
            self.settings.max_concurrency,
            time.perf_counter() - started,
        )

    async def watch(self) -> None:
        """Reload whenever the source changes (a promote or rollback moves the alias), every interval."""
        interval = self.settings.reload_interval_s
        while True:
            await asyncio.sleep(interval)
            if self.ready:
                try:
                    await self.reload(force=False)
                except Exception as err:  # a registry that cannot be reached for a moment: try again next time
                    log.warning("could not look for a new model: %s", first_line(err))

    async def reload(self, force: bool) -> dict:
        """Load the source again if it changed (or when forced), warm it and swap it in."""
        async with self._reloading:
            old = self.current
            if not force and await asyncio.to_thread(self._watch) == old.token:
                return {"outcome": "unchanged", "version": old.version}
            started = time.perf_counter()
            try:
                new = await self._generation()
            except Exception as err:
                error = first_line(err)
                self.metrics.swaps.labels("failed").inc()
                self.last_reload = {"at": _now(), "outcome": "failed", "version": old.version, "error": error}
                log.error("reload failed, still serving version %s: %s", old.version, error)
                return self.last_reload
            self.current = new
            self._retire(old)
            self.metrics.serving(new.info, previous=old.info)
            self.metrics.swaps.labels("swapped").inc()
            self.last_reload = {"at": _now(), "outcome": "swapped", "version": new.version, "previous": old.version, "error": None}
            took = time.perf_counter() - started
            log.info("now serving %s version %s (was %s), loaded in %.1f s", new.info.get("name"), new.version, old.version, took)
            return self.last_reload

    def _retire(self, generation: Generation) -> None:
        generation.retired = True
        if generation.users == 0:
            task = asyncio.create_task(generation.stop())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def stop(self) -> None:
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self.current is not None:
            await self.current.stop()

    # ---- what every request goes through -----------------------------------------------------

    def limits(self) -> dict:
        s = self.settings
        recognizer = self.current.recognizer if self.current is not None else None
        return {
            "max_upload_bytes": s.max_upload_bytes,
            "max_pixels": recognizer.max_pixels if recognizer is not None else None,
            "max_explain_pixels": s.max_explain_pixels,
            "max_faces": s.max_faces,
            "max_explain_faces": s.max_explain_faces,
            "request_timeout_s": s.request_timeout_s,
            "max_concurrency": s.max_concurrency,
            "max_queue": s.max_queue,
        }

    def require_ready(self) -> None:
        if not self.ready:
            detail = "the model is still loading; retry when /readyz answers 200."
            if self.load_error:
                detail = f"the model failed to load: {self.load_error}"
            raise fail(503, detail, **{"Retry-After": "2"})

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[Generation]:
        """A place among the requests admitted, and the generation that answers this request."""
        self.require_ready()
        self.admission.enter()
        self.metrics.in_flight.set(self.admission.inside)
        generation = self.current
        generation.users += 1
        try:
            yield generation
        finally:
            generation.users -= 1
            self.admission.leave()
            self.metrics.in_flight.set(self.admission.inside)
            self.metrics.queued_faces.set(generation.batcher.queued)
            if generation.retired and generation.users == 0:
                self._retire(generation)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
