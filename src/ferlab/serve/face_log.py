"""The service's face log (opt-in): one JSON line per face classified by /v1/predict, its summary
(ferlab.inference.face_summary: probabilities, top probability, face size, brightness, sharpness,
an embedding of the penultimate layer) and never its pixels. `ferlab monitor` turns a window of it
into a drift report (ferlab.serve.drift).

    face_log = FaceLog("logs/faces.jsonl")
    face_log.prepare(recognizer)                       # optional: build the embedding model now
    face_log.observe(recognizer, detections, crops, probabilities, model_version)   # per image
    face_log.close()                                   # at shutdown: writes what is still queued

observe() only copies the faces' crops and probabilities into a queue (tens of microseconds): the
summaries, the embedding (a model call of its own) and the write happen on the log's own thread, so
the thread that classifies never waits for them. When that thread falls `max_pending` images behind,
further faces are not logged (counted in `dropped`, said in the log) rather than slowing the service.

Writing: each image's lines are one append (O_APPEND, one write), so lines from several service
processes never interleave. When the file passes `max_bytes` it is renamed faces.jsonl.1 (the older
ones .2, .3, ..., the oldest beyond `keep` deleted) and a new one begun; readers take the file and
its numbered predecessors. A failure to write (a full disk) never fails a request: it is logged and
the faces are counted in `dropped`.
"""

import fcntl
import json
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.inference.face_summary import Penultimate, summarize

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # ~120,000 faces a file (about 540 bytes a line)
DEFAULT_KEEP = 8  # rotated files kept beside the current one
DEFAULT_MAX_PENDING = 1024  # images queued for the log's thread before faces are dropped
log = logging.getLogger("uvicorn.error")


class FaceLog:
    """Appends the summaries of the faces the service classifies to a JSONL file, on a thread of its own."""

    def __init__(
        self,
        path: str | os.PathLike,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep: int = DEFAULT_KEEP,
        embedding: bool = True,
        max_pending: int = DEFAULT_MAX_PENDING,
    ):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.embedding = embedding
        self.faces = 0  # faces written
        self.dropped = 0  # faces not written: the log fell behind, a summary or a write failed
        self._lock = threading.Lock()  # the file and the counters
        self._model_lock = threading.Lock()  # the embedding model
        self._fd: int | None = None
        self._embedder: Penultimate | None = None
        self._embedder_of = None  # the classifier it was made for: a reloaded model gets a new one
        self._no_embedding_said = False
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except OSError as err:
            raise FerlabError(f"cannot write the face log {self.path} ({err.strerror}); choose a writable path.") from None
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._work, name="ferlab-face-log", daemon=True)
        self._thread.start()

    # ---- summaries ---------------------------------------------------------------------------

    def prepare(self, recognizer) -> None:
        """Build the embedding model for this recognizer's classifier now rather than on the first face."""
        self._embedder_for(recognizer.classifier)

    def _embedder_for(self, classifier) -> Penultimate | None:
        if not self.embedding:
            return None
        with self._model_lock:
            if classifier is not self._embedder_of:
                self._embedder_of = classifier
                try:
                    self._embedder = Penultimate.of(classifier)
                except FerlabError as err:
                    self._embedder = None
                    log.warning("face log: no embedding for this model (%s)", err)
                if self._embedder is None and not self._no_embedding_said:
                    self._no_embedding_said = True
                    log.warning("face log: the model's runtime gives no penultimate layer; faces are logged without an embedding")
            return self._embedder

    def observe(self, recognizer, detections, crops: np.ndarray, probabilities: np.ndarray, model_version: str | None) -> None:
        """Queue one image's faces for the log: its detections, (N, 48, 48) uint8 crops as classified
        and (N, k) probabilities (k: the recognizer's `emotions`). Returns at once; never raises for the log's sake."""
        if not len(crops) or self._closed:
            return
        item = (
            recognizer.classifier,
            tuple(getattr(recognizer, "emotions", EMOTIONS)),
            [tuple(d.box) for d in detections],
            np.array(crops, dtype=np.uint8, copy=True),
            np.array(probabilities, dtype=np.float32, copy=True),
            model_version,
            datetime.now(timezone.utc),
        )
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._drop(len(crops), f"the log is {self._queue.maxsize} images behind")

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                classifier, emotions, boxes, crops, probabilities, version, when = item
                try:
                    rows = summarize(boxes, crops, probabilities, version, self._embedder_for(classifier), when, emotions)
                except Exception as err:  # the log's thread must outlive any one image
                    self._drop(len(crops), f"summarising failed: {err!r}")
                    continue
                self.write(rows)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued image is written."""
        if self._thread.is_alive():
            self._queue.join()

    def _drop(self, faces: int, why: str) -> None:
        with self._lock:
            self.dropped += faces
            dropped = self.dropped
        if dropped == faces or dropped % 1000 < faces:  # the first time, then about every 1000 faces
            log.warning("face log: %d faces not written to %s (%s)", dropped, self.path, why)

    # ---- the file ----------------------------------------------------------------------------

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, rows: list[dict]) -> None:
        """Append rows (dicts) as JSON lines in one write, now; rotate past max_bytes."""
        data = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode()
        failed = None
        with self._lock:
            try:
                self._follow_rotation()
                os.write(self._fd, data)
                self.faces += len(rows)
                if os.fstat(self._fd).st_size >= self.max_bytes:
                    self._rotate()
            except OSError as err:
                failed = err.strerror or str(err)
        if failed:
            self._drop(len(rows), failed)

    def _follow_rotation(self) -> None:
        """Reopen when another process rotated the file (the path names a new file)."""
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if self._fd is None or current != os.fstat(self._fd).st_ino:
            self._close_fd()
            self._open()

    def _rotate(self) -> None:
        """faces.jsonl -> faces.jsonl.1 -> .2 ...; under a file lock, so one process rotates."""
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if os.stat(self.path).st_size >= self.max_bytes and os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                for n in range(self.keep, 0, -1):
                    older = rotated(self.path, n)
                    if older.exists():
                        if n == self.keep:
                            older.unlink()
                        else:
                            older.rename(rotated(self.path, n + 1))
                if self.keep:
                    self.path.rename(rotated(self.path, 1))
                else:
                    self.path.unlink()
            self._close_fd()
            self._open()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (for at most `timeout` seconds), stop the thread, close the file."""
        self._closed = True
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        with self._lock:
            self._close_fd()


def rotated(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def log_files(path: str | os.PathLike) -> list[Path]:
    """The face log and its rotated predecessors, oldest first."""
    path = Path(path)
    older, n = [], 1
    while rotated(path, n).is_file():
        older.append(rotated(path, n))
        n += 1
    return [*reversed(older), *([path] if path.is_file() else [])]


@dataclass
class Window:
    """The faces of a face log in a time window, and what was skipped reading it."""

    rows: list[dict]
    files: list[Path]
    lines: int = 0  # lines read, in the window or not
    corrupt: int = 0  # lines that are not a face summary (a torn write, an edited file): skipped
    first_corrupt: str = ""  # where the first one is, for the message
    models: dict[str, int] = field(default_factory=dict)  # model version -> faces in the window


def parse_time(text: str) -> datetime:
    stamp = datetime.fromisoformat(text)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _valid(row) -> bool:
    return isinstance(row, dict) and isinstance(row.get("time"), str) and isinstance(row.get("probabilities"), dict)


def read_window(path: str | os.PathLike, since: datetime | None = None, until: datetime | None = None, last: int | None = None) -> Window:
    """The faces logged at `since` or later and before `until`, the `last` of them (all by default)."""
    files = log_files(path)
    if not files:
        raise FerlabError(f"no face log at {path}; start the service with --face-log {path} and send it images first.")
    window = Window([], files)
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                window.lines += 1
                try:
                    row = json.loads(line)
                    stamp = parse_time(row["time"]) if _valid(row) else None
                except (ValueError, TypeError, KeyError):
                    stamp = None
                if stamp is None:
                    window.corrupt += 1
                    window.first_corrupt = window.first_corrupt or f"{file}:{number}"
                    continue
                if (since is None or stamp >= since) and (until is None or stamp < until):
                    window.rows.append(row)
    if last is not None:
        window.rows = window.rows[-last:] if last else []
    for row in window.rows:
        key = str(row.get("model"))
        window.models[key] = window.models.get(key, 0) + 1
    return window
