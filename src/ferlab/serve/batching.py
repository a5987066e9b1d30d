"""Dynamic micro-batching of model calls.

Requests put their faces in a queue and await the answer. One worker takes every face
queued at that moment, classifies them in one call on its own thread, and splits the
probabilities back per request. Under no load a request is classified alone at once;
under load, the faces that arrived during one model call go through the next one
together, so throughput grows with the load. The model is only ever called from that
one thread, so it need not be thread-safe.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np


class MicroBatcher:
    """`await batcher.classify(faces)` -> that request's rows of one batched `classify_fn` call."""

    def __init__(
        self,
        classify_fn: Callable[[np.ndarray], np.ndarray],
        max_faces: int = 256,
        on_batch: Callable[[int], None] | None = None,
    ):
        self._classify_fn = classify_fn
        self._on_batch = on_batch  # told the size of each model call (the service's metrics)
        self.max_faces = max_faces  # a batch stops growing once it holds this many faces
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._thread: ThreadPoolExecutor | None = None
        self.calls = 0  # model calls made
        self.faces = 0  # faces classified
        self.queued = 0  # faces waiting for the model

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferlab-classify")
        self._worker = asyncio.create_task(self._run(), name="ferlab-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        while self._queue is not None and not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the service is shutting down"))
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    async def classify(self, faces: np.ndarray) -> np.ndarray:
        if self._worker is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((faces, future))
        self.queued += len(faces)
        return await future

    async def call(self, fn: Callable, *args):
        """fn(*args) on the model's thread, between two batches: other uses of the model (the
        gradients of Grad-CAM) never run beside a classification."""
        if self._thread is None:
            raise RuntimeError("the batcher is not started")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _take_queued(self, first) -> list:
        batch, count = [first], len(first[0])
        while count < self.max_faces and not self._queue.empty():
            item = self._queue.get_nowait()
            batch.append(item)
            count += len(item[0])
        self.queued -= count
        return [(faces, future) for faces, future in batch if not future.done()]  # drop cancelled requests

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._take_queued(await self._queue.get())
            if not batch:
                continue
            faces = np.concatenate([f for f, _ in batch])
            try:
                probabilities = await loop.run_in_executor(self._thread, self._classify_fn, faces)
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as err:  # the model failed: every request of the batch learns it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.calls += 1
            self.faces += len(faces)
            if self._on_batch is not None:
                self._on_batch(len(faces))
            start = 0
            for part, future in batch:
                if not future.done():
                    future.set_result(probabilities[start : start + len(part)])
                start += len(part)
