"""Batch scoring on every core: the images split in parts, scored by worker processes, written
part by part, assembled into one Parquet or CSV file (one row per face, ferlab.inference.face_rows).

    job = BatchJob(batch_input.of_files("photos", files), "faces.parquet", RecognizerOptions(model="models/bundle"))
    summary = job.run(workers=2, progress=lambda images, error: ...)

Each worker process loads its own recogniser (detectors are not shareable) with
cpu_count / workers threads, takes parts from a queue and writes each part atomically to
`OUTPUT.parts/part-NNNNNN.<format>`. The parts folder also holds `job.json`, the input and
options it was made with. A run that stops (Ctrl+C, a kill, a worker that dies or hangs) leaves
the finished parts; the same command again scores only the missing ones, then the parts are
joined in input order into OUTPUT (atomically) and the folder is removed.
"""

import hashlib
import os
import queue
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ferlab.errors import FerlabError
from ferlab.fileio import atomic_path, read_json, write_json
from ferlab.inference.batch_input import BatchInput
from ferlab.inference.face_rows import FaceRows
from ferlab.inference.options import RecognizerOptions

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
DEFAULT_PART_SIZE = 128
DEFAULT_TIMEOUT_S = 300.0  # a worker silent this long on one image is taken as hung
POLL_S = 0.2
# job.json's keys, as a user names them
WHAT = {
    "input": "input",
    "images": "list of images",
    "images_sha256": "list of images",
    "part_size": "--part-size",
    "format": "output format",
    "options": "set of model options",
    "model": "model",
    "emotions": "model",
}


@dataclass
class Summary:
    images: int = 0
    faces: int = 0
    no_face: int = 0
    unreadable: int = 0
    resumed_parts: int = 0  # parts found done when the run started
    errors: list[str] = field(default_factory=list)  # the unreadable images of this run, one sentence each


def output_format(output: str | os.PathLike) -> str:
    suffix = Path(output).suffix.lower()
    if suffix not in FORMATS:
        raise FerlabError(f"{output} must end in .parquet or .csv (the output's format).")
    return FORMATS[suffix]


def model_identity(model: str) -> dict:
    """The model source (resolved) and, for local files, their sizes and times: a different model at the same path is a
    different job."""
    from ferlab.lifecycle import pretrained

    path = pretrained.verified_folder(model) if pretrained.is_uri(model) else Path(model)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    return {"source": str(model), "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}


class BatchJob:
    def __init__(
        self,
        images: BatchInput,
        output: str | os.PathLike,
        options: RecognizerOptions = RecognizerOptions(),
        part_size: int = DEFAULT_PART_SIZE,
    ):
        self.images = images
        self.output = Path(output)
        self.format = output_format(output)
        self.options = options
        self.parts = images.parts(part_size)
        self.parts_dir = Path(f"{self.output}.parts")
        from ferlab.inference.sources import locate, resolve

        source = resolve(options.model).source
        self.rows = FaceRows(locate(source).emotions)  # the table's columns: the model's own (its labels.json), not loading it
        self.manifest = {
            "input": images.source,
            "images": len(images.keys),
            "images_sha256": hashlib.sha256("\n".join(images.keys).encode()).hexdigest(),
            "part_size": part_size,
            "format": self.format,
            "options": asdict(options),
            "model": model_identity(source),
            "emotions": list(self.rows.emotions),
        }

    def part_path(self, index: int) -> Path:
        return self.parts_dir / f"part-{index:06d}.{self.format}"

    def done(self) -> set[int]:
        return {i for i in range(len(self.parts)) if self.part_path(i).is_file()}

    def stopped(self, reason: str) -> FerlabError:
        """The one sentence for a run that stopped: why, and where its finished parts are kept
        (the parts folder is removed when it holds none)."""
        done = len(self.done()) if self.parts_dir.is_dir() else 0
        if not done:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            return FerlabError(f"{reason}.")
        kept = f"{done} of {len(self.parts)} parts are kept in {self.parts_dir}"
        return FerlabError(f"{reason}; {kept}: run the same command again to resume.")

    def prepare(self, overwrite: bool = False) -> set[int]:
        """Check OUTPUT and an earlier unfinished run; the parts already done."""
        if overwrite:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        elif self.output.exists() and not self.parts_dir.is_dir():
            raise FerlabError(
                f"{self.output} already exists; pass --overwrite to score {self.images.source} again, or choose another OUTPUT."
            )
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.parts_dir.glob(".*.tmp"):  # what a killed atomic write left
            shutil.rmtree(stale, ignore_errors=True)
        done = self.done()
        job = self.parts_dir / "job.json"
        if done and job.is_file():
            before = read_json(job)
            changed = sorted({WHAT[k] for k in self.manifest if before.get(k) != self.manifest[k]})
            if changed:
                raise FerlabError(
                    f"{self.parts_dir} holds an unfinished run with a different {' and '.join(changed)}; run that command again to "
                    f"finish it, or delete {self.parts_dir} (or pass --overwrite) to start afresh."
                )
        else:
            for i in done:  # parts without the job that made them: not to be trusted
                self.part_path(i).unlink()
            done = set()
            write_json(job, self.manifest)
        return done

    def run(
        self,
        workers: int = 1,
        overwrite: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        progress: Callable[[], None] | None = None,
        on_unreadable: Callable[[str], None] | None = None,
        on_start: Callable[[int, int], None] | None = None,
    ) -> Summary:
        """Score what is not done yet and write OUTPUT. progress() after each image is read;
        on_unreadable(sentence) for each image that cannot be; on_start(images done before, images in all)."""
        done = self.prepare(overwrite)
        todo = [i for i in range(len(self.parts)) if i not in done]
        if on_start:
            on_start(sum(len(self.parts[i].keys) for i in done), len(self.images.keys))
        errors: list[str] = []
        if todo:
            try:
                _Pool(self, todo, max(1, min(workers, len(todo))), timeout_s, progress, on_unreadable, errors).run()
            except _Stop as stop:
                raise self.stopped(str(stop)) from None
        summary = self.assemble()
        summary.resumed_parts, summary.errors = len(done), errors
        return summary

    def assemble(self) -> Summary:
        """Join the parts, in order, into OUTPUT; count what they hold; remove the parts folder."""
        summary = Summary()
        with atomic_path(self.output) as tmp:
            if self.format == "parquet":
                import pyarrow.parquet as pq

                with pq.ParquetWriter(tmp, self.rows.arrow_schema()) as writer:
                    for i in range(len(self.parts)):
                        part = pq.read_table(self.part_path(i))
                        _count(summary, part.column("face").to_pylist(), part.column("error").to_pylist())
                        writer.write_table(part)
            else:
                import csv

                with open(tmp, "w", newline="") as out:
                    out.write(self.rows.csv_text([]))
                    for i in range(len(self.parts)):
                        text = self.part_path(i).read_text()
                        body = text[text.index("\n") + 1 :]
                        rows = list(csv.reader(body.splitlines()))
                        _count(summary, [r[1] or None for r in rows], [r[-1] or None for r in rows])
                        out.write(body)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return summary


def _count(summary: Summary, faces: list, errors: list) -> None:
    for face, error in zip(faces, errors):
        summary.images += face is None or str(face) == "0"
        summary.faces += face is not None
        summary.no_face += face is None and error is None
        summary.unreadable += error is not None


# ---- the worker processes --------------------------------------------------------------------


def write_part(path: Path, fmt: str, table: FaceRows, rows: list[list], csv_rows: list[list]) -> None:
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table.table(rows), tmp)
        else:
            tmp.write_text(table.csv_text(csv_rows))


def _worker(wid: int, options: RecognizerOptions, table: FaceRows, threads: int, fmt: str, parts_dir: str, tasks, results) -> None:
    """Score parts until the queue says stop. Messages: ready, start (part), read (one image),
    unreadable (its sentence), done (part), failed (a sentence that stops the run)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the main process's to handle
    parent = os.getppid()

    def read() -> None:
        if os.getppid() != parent:  # the main process was killed: stop rather than score for nobody
            os._exit(1)
        results.put(("read", wid))

    try:
        recognizer = options.load(threads)
        if recognizer.emotions != table.emotions:
            raise FerlabError(
                f"the model now answers with {', '.join(recognizer.emotions)}, not {', '.join(table.emotions)} as when this run started"
            )
        results.put(("ready", wid))
        while (task := tasks.get()) is not None:
            index, part = task
            results.put(("start", wid, index))
            rows, csv_rows = [], []
            for key, (_, _, found) in zip(part.keys, recognizer.predict_files(part.load(), options.face_crop, on_read=read)):
                rows += table.rows_of(key, found)
                if fmt == "csv":
                    csv_rows += table.csv_rows_of(key, found)
                if isinstance(found, FerlabError):
                    results.put(("unreadable", wid, str(found)))
            write_part(Path(parts_dir) / f"part-{index:06d}.{fmt}", fmt, table, rows, csv_rows)
            results.put(("done", wid, index))
    except FerlabError as err:
        results.put(("failed", wid, str(err)))
    except OSError as err:
        results.put(("failed", wid, f"worker {wid} cannot write to {parts_dir} ({err.strerror or err})"))


class _Stop(Exception):
    """Why the workers stopped (BatchJob.stopped makes it the user's sentence)."""


class _Pool:
    """The worker processes of one run, watched: a worker that dies or stays silent stops the run."""

    def __init__(self, job: BatchJob, todo: list[int], workers: int, timeout_s: float, progress, on_unreadable, errors: list[str]):
        import multiprocessing

        self.job, self.todo, self.timeout_s, self.errors = job, todo, timeout_s, errors
        self.progress, self.on_unreadable = progress, on_unreadable
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no TensorFlow or LiteRT state forked
        self.tasks, self.results = context.Queue(), context.Queue()
        threads = max(1, (os.cpu_count() or 1) // workers)
        args = (job.options, job.rows, threads, job.format, str(job.parts_dir), self.tasks, self.results)
        self.procs = [context.Process(target=_worker, args=(w + 1, *args), daemon=True) for w in range(workers)]
        self.busy: dict[int, tuple[int, int, float]] = {}  # worker -> (part, images done in it, time of its last word)

    def run(self) -> None:
        for index in self.todo:
            self.tasks.put((index, self.job.parts[index]))
        for _ in self.procs:
            self.tasks.put(None)
        try:
            for proc in self.procs:
                proc.start()
            remaining = set(self.todo)
            while remaining:
                try:
                    message = self.results.get(timeout=POLL_S)
                except queue.Empty:
                    self.check_workers()
                    continue
                self.handle(message, remaining)
            for proc in self.procs:
                proc.join(10)
        finally:
            self.stop()

    def handle(self, message: tuple, remaining: set[int]) -> None:
        kind, wid, *rest = message
        if kind == "start":
            self.busy[wid] = (rest[0], 0, time.monotonic())
        elif kind == "read":
            part, n, _ = self.busy[wid]
            self.busy[wid] = (part, n + 1, time.monotonic())
            if self.progress:
                self.progress()
        elif kind == "unreadable":
            self.errors.append(rest[0])
            if self.on_unreadable:
                self.on_unreadable(rest[0])
        elif kind == "done":
            self.busy.pop(wid, None)
            remaining.discard(rest[0])
        elif kind == "failed":
            raise _Stop(rest[0].rstrip("."))

    def where(self, wid: int) -> str:
        part, n, _ = self.busy[wid]
        keys = self.job.parts[part].keys
        return keys[min(n, len(keys) - 1)]

    def check_workers(self) -> None:
        for wid, proc in enumerate(self.procs, start=1):
            if proc.exitcode is not None and proc.exitcode != 0:
                how = f"killed by signal {-proc.exitcode}" if proc.exitcode < 0 else f"exit status {proc.exitcode}"
                at = f" while scoring {self.where(wid)}" if wid in self.busy else ""
                raise _Stop(f"worker {wid} stopped ({how}){at}")
        now = time.monotonic()
        for wid, (_, _, last) in self.busy.items():
            if now - last > self.timeout_s:
                raise _Stop(f"worker {wid} has not answered for {self.timeout_s:g} s on {self.where(wid)} (move it away if it hangs again)")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for q in (self.tasks, self.results):
            q.cancel_join_thread()  # what is left in them is of no use, and must not hold up the exit
            q.close()
