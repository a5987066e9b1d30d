"""MicroBatcher: requests queued during a model call share the next call; one thread ever calls the model."""

import asyncio
import threading
import time

import numpy as np
import pytest

from ferlab.serve.batching import MicroBatcher


class GatedModel:
    """A stand-in model: each face's row is its first pixel repeated; the first call waits for `release`."""

    def __init__(self, delay: float = 0.0):
        self.batches: list[int] = []
        self.threads: set[int] = set()
        self.entered, self.release = threading.Event(), threading.Event()
        self.active = self.max_active = 0
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.threads.add(threading.get_ident())
            if not self.batches:
                self.entered.set()
                assert self.release.wait(10)
            time.sleep(self.delay)
            self.batches.append(len(faces))
            return np.repeat(faces[:, :1, 0].astype(np.float32), 7, axis=1)
        finally:
            with self._lock:
                self.active -= 1


def faces_of(tag: int, count: int) -> np.ndarray:
    return np.full((count, 48, 48), tag, np.uint8)


async def queue_behind_a_blocked_call(batcher: MicroBatcher, model: GatedModel, sizes: list[int]):
    """One request enters the model and blocks; then requests of `sizes` faces queue up; then all are released."""
    await batcher.start()
    first = asyncio.create_task(batcher.classify(faces_of(100, 1)))
    assert await asyncio.to_thread(model.entered.wait, 10)
    queued = [asyncio.create_task(batcher.classify(faces_of(tag, n))) for tag, n in enumerate(sizes, start=1)]
    await asyncio.sleep(0.05)  # every request is in the queue now
    model.release.set()
    results = await asyncio.gather(first, *queued)
    await batcher.stop()
    return results


def test_requests_queued_during_a_call_are_classified_in_one_call():
    model = GatedModel()
    batcher = MicroBatcher(model)
    sizes = [1, 2, 3, 1, 4, 2]
    results = asyncio.run(queue_behind_a_blocked_call(batcher, model, sizes))
    assert model.batches == [1, sum(sizes)]  # six requests, one model call
    assert batcher.calls == 2 and batcher.faces == 1 + sum(sizes)
    # each request gets its own rows back, in order
    assert results[0].shape == (1, 7) and np.all(results[0] == 100)
    for tag, (n, rows) in enumerate(zip(sizes, results[1:]), start=1):
        assert rows.shape == (n, 7)
        assert np.all(rows == tag)


def test_a_batch_stops_growing_at_max_faces():
    model = GatedModel()
    results = asyncio.run(queue_behind_a_blocked_call(MicroBatcher(model, max_faces=4), model, [3, 3, 3, 3]))
    assert model.batches == [1, 6, 6]
    assert [len(r) for r in results] == [1, 3, 3, 3, 3]


def test_the_model_is_called_from_one_thread_only_even_under_load():
    model = GatedModel(delay=0.005)
    model.release.set()

    async def load():
        batcher = MicroBatcher(model)
        await batcher.start()

        async def client(tag):
            out = []
            for _ in range(5):
                out.append(await batcher.classify(faces_of(tag, 1 + tag % 3)))
                await asyncio.sleep(0)
            return out

        results = await asyncio.gather(*(client(tag) for tag in range(20)))
        await batcher.stop()
        return results

    results = asyncio.run(load())
    assert model.max_active == 1 and len(model.threads) == 1
    assert threading.get_ident() not in model.threads  # never on the event loop's thread
    assert sum(model.batches) == sum(5 * (1 + tag % 3) for tag in range(20))
    assert len(model.batches) < 100  # 100 requests, fewer model calls
    for tag, answers in enumerate(results):
        assert all(np.all(rows == tag) and len(rows) == 1 + tag % 3 for rows in answers)


def test_other_uses_of_the_model_run_on_its_thread_between_batches():
    """What /v1/explain's Grad-CAM does: it never runs beside a classification."""
    model = GatedModel()

    async def scenario():
        batcher = MicroBatcher(model)
        await batcher.start()
        blocked = asyncio.create_task(batcher.classify(faces_of(1, 1)))
        assert await asyncio.to_thread(model.entered.wait, 10)
        other = asyncio.create_task(batcher.call(lambda tag: (tag, model.active, threading.get_ident()), "gradients"))
        await asyncio.sleep(0.05)
        assert not other.done()  # it waits for the call in progress
        model.release.set()
        await blocked
        result = await other
        await batcher.stop()
        return result

    tag, active, thread = asyncio.run(scenario())
    assert tag == "gradients" and active == 0 and model.threads == {thread}


def test_a_failing_model_fails_its_batch_and_the_batcher_keeps_working():
    calls = []

    def flaky(faces):
        calls.append(len(faces))
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return np.zeros((len(faces), 7), np.float32)

    async def scenario():
        batcher = MicroBatcher(flaky)
        await batcher.start()
        with pytest.raises(RuntimeError, match="model exploded"):
            await batcher.classify(faces_of(1, 2))
        rows = await batcher.classify(faces_of(2, 3))
        await batcher.stop()
        return rows

    assert asyncio.run(scenario()).shape == (3, 7)


def test_classify_before_start_is_an_error():
    async def scenario():
        await MicroBatcher(lambda faces: faces).classify(faces_of(1, 1))

    with pytest.raises(RuntimeError, match="not started"):
        asyncio.run(scenario())
