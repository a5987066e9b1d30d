"""Batch throughput: faces per second of `ferlab batch` with 1 and 2 worker processes against the
single process of `ferlab detect`, on the same folder of photos.

Run by hand from the project root on an otherwise idle machine (never in CI), after `dvc repro`:
    python benchmarks/batch_throughput.py [--model models/bundle] [--images 400] [--rounds 3]
Photos: scikit-image's astronaut framed in 640x480 JPEGs, one face each, the frame shifted and
scaled a little from one photo to the next. Each command runs as a user runs it, as its own process
(start, model load, reading, detection, classification, writing), `--rounds` times in turn; the
figure is the median round, with the fastest and slowest. The load average before and after is
recorded, and the CPU seconds each command used (itself and its workers), which other work
changes less than the wall time: figures taken while other work runs mean little. Writes reports/benchmarks/batch_throughput.json.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
from vs_fer import cpu_name  # benchmarks/ is the script's folder, so on sys.path

from ferlab.fileio import write_json
from ferlab.inference.sources import resolve

OUT = Path("reports/benchmarks/batch_throughput.json")


def photos(folder: Path, count: int) -> None:
    from skimage.data import astronaut

    face = astronaut()[..., ::-1]
    rng = np.random.default_rng(0)
    for i in range(count):
        side = int(rng.integers(300, 420))
        small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        frame = np.full((480, 640, 3), int(rng.integers(40, 200)), np.uint8)
        x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        frame[y : y + side, x : x + side] = small
        cv2.imwrite(str(folder / f"photo{i:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])


def cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)  # the finished child processes, their workers included
    return used.ru_utime + used.ru_stime


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds of one run of the command."""
    start, cpu = time.perf_counter(), cpu_s()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return seconds, cpu_s() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: models/bundle if present, else models/model.h5")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = resolve(args.model).source
    model = str(Path(model).resolve()) if Path(model).exists() else model
    ferlab = [sys.executable, "-m", "ferlab.cli"]
    commands = {
        "detect (1 process)": [*ferlab, "detect", "photos", "--csv", "-q", "--model", model],
        "batch, 1 worker": [*ferlab, "batch", "photos", "out.parquet", "--workers", "1", "--overwrite", "-q", "--model", model],
        "batch, 2 workers": [*ferlab, "batch", "photos", "out.parquet", "--workers", "2", "--overwrite", "-q", "--model", model],
    }
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="ferlab-batch-bench-"))
    try:
        (work / "photos").mkdir()
        photos(work / "photos", args.images)
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                wall, used = timed(command, work)
                times[name].append(wall)
                cpu[name].append(used)
        face = pq.read_table(work / "out.parquet").column("face")
        faces = len(face) - face.null_count
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    results = {
        "cpu": cpu_name(),
        "model": model,
        "images": args.images,
        "faces": faces,
        "rounds": args.rounds,
        "load_average_1_5_15_before": [round(v, 2) for v in load_before],
        "load_average_1_5_15_after": [round(v, 2) for v in load_after],
        "commands": {},
    }
    base = statistics.median(times["detect (1 process)"])
    print(
        f"{args.images} photos (640x480, {faces} faces), {cpu_name()}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(f"{'command':<20} {'wall s (min-max)':>20} {'faces/s':>9} {'vs detect':>10} {'CPU s':>7}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        results["commands"][name] = {
            "wall_s_median": round(median, 2),
            "wall_s_min": round(min(seconds), 2),
            "wall_s_max": round(max(seconds), 2),
            "faces_per_s": round(faces / median, 1),
            "speedup_vs_detect": round(base / median, 2),
            "cpu_s_median": round(statistics.median(cpu[name]), 2),  # over the command and its workers
        }
        used = statistics.median(cpu[name])
        spread = f"({min(seconds):.2f}-{max(seconds):.2f})"
        print(f"{name:<20} {median:>8.2f} {spread} {faces / median:>9.1f} {base / median:>9.2f}x {used:>7.2f}")
    write_json(OUT, results)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
