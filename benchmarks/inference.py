"""Inference speed: classifier throughput, end-to-end latency per 640x480 frame (1, 5 and 20
faces), and the cold start of `ferlab detect`.

Run by hand from the project root on an otherwise idle machine (never in CI), after `dvc repro`:
    python benchmarks/inference.py [--model models/bundle] [--detectors blazeface haar mtcnn] [--rounds 5]
Every figure is the median of --rounds rounds (each round itself a median of many calls),
with the lowest and highest round as its spread. The classifier is timed on both runtimes
where the model has both (the bundle's model.tflite on LiteRT, model.h5 on TensorFlow).
Frames: scikit-image's astronaut photo scaled to 640x480 (one face), and her face tiled
5 and 20 times into 640x480 frames. Writes reports/benchmarks/inference.json.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np

from ferlab.fileio import write_json
from ferlab.inference.predict import EmotionRecognizer
from ferlab.inference.sources import load_model, resolve

OUT = Path("reports/benchmarks/inference.json")


def timed(fn, rounds: int, calls: int, warmup: int = 3) -> dict:
    """Median seconds per call over `rounds` rounds (each the median of `calls` calls), with the spread."""
    for _ in range(warmup):
        fn()
    per_round = []
    for _ in range(rounds):
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        per_round.append(statistics.median(times))
    return {"median_s": statistics.median(per_round), "min_s": min(per_round), "max_s": max(per_round)}


def ms(t: dict) -> dict:
    return {"median_ms": round(t["median_s"] * 1000, 2), "spread_ms": [round(t["min_s"] * 1000, 2), round(t["max_s"] * 1000, 2)]}


def astronaut_frame() -> np.ndarray:
    from skimage.data import astronaut

    return cv2.resize(astronaut()[..., ::-1], (640, 480), interpolation=cv2.INTER_AREA)


def tiled_frame(frame: np.ndarray, count: int) -> np.ndarray:
    """`count` copies of the astronaut's head on a grey 640x480 frame, in a grid."""
    head = frame[25:195, 195:365]  # her face, with a little hair around it
    cols = int(np.ceil(np.sqrt(count * 4 / 3)))
    rows = int(np.ceil(count / cols))
    side = min(640 // cols, 480 // rows)
    tile = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
    out = np.full((480, 640, 3), 110, np.uint8)
    for i in range(count):
        r, c = divmod(i, cols)
        out[r * side : (r + 1) * side, c * side : (c + 1) * side] = tile
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the model the tools use (ferlab.inference.sources.resolve)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the JSON goes (default {OUT})")
    parser.add_argument("--detectors", nargs="+", default=["blazeface", "haar", "mtcnn"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64, 256, 1024])
    parser.add_argument("--faces", nargs="+", type=int, default=[1, 5, 20])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--cold-runs", type=int, default=5)
    args = parser.parse_args()

    model = resolve(args.model).source
    runtimes = {}
    for runtime in ("tflite", "keras"):
        try:
            runtimes[runtime] = load_model(model, runtime)
        except Exception as err:  # a .h5 has no TFLite model: time what there is
            print(f"runtime {runtime}: skipped ({err})")
    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "model": model,
        "rounds": args.rounds,
    }

    rng = np.random.default_rng(0)
    results["classifier_throughput"] = {}
    for runtime, (classifier, _) in runtimes.items():
        recognizer = EmotionRecognizer(classifier)
        table = {}
        for batch in args.batches:
            faces = rng.integers(0, 256, (batch, 48, 48), dtype=np.uint8)
            t = timed(lambda: recognizer.classify(faces), args.rounds, max(2, args.calls // max(1, batch // 32)))
            table[str(batch)] = ms(t) | {
                "faces_per_s": round(batch / t["median_s"]),
                "faces_per_s_spread": [round(batch / t["max_s"]), round(batch / t["min_s"])],
            }
            print(f"classifier {runtime:6s} batch {batch:5d}: {t['median_s'] * 1000:8.2f} ms, {batch / t['median_s']:7.0f} faces/s")
        results["classifier_throughput"][runtime] = table

    classifier, contract = next(iter(runtimes.values()))
    frame = astronaut_frame()
    frames = {n: frame if n == 1 else tiled_frame(frame, n) for n in args.faces}
    latency = {}
    for name in args.detectors:
        try:
            recognizer = EmotionRecognizer(classifier, name, contract)
            recognizer.predict(frame)
        except Exception as err:  # e.g. mtcnn not installed: report and go on
            latency[name] = {"error": str(err)}
            print(f"{name}: skipped ({err})")
            continue
        latency[name] = {}
        for n, image in frames.items():
            found = len(recognizer.predict(image))
            detect_t = timed(lambda: recognizer.detector.detect(image), args.rounds, args.calls // (4 if name == "mtcnn" else 1))
            total_t = timed(lambda: recognizer.predict(image), args.rounds, args.calls // (4 if name == "mtcnn" else 1))
            latency[name][f"{n}_faces"] = {
                "found": found,
                "detect": ms(detect_t),
                "end_to_end": ms(total_t),
                "fps": round(1 / total_t["median_s"], 1),
            }
            print(
                f"640x480, {n:2d} face(s), {name:9s}: found {found:2d}, detection {detect_t['median_s'] * 1000:7.1f} ms, "
                f"end to end {total_t['median_s'] * 1000:7.1f} ms"
            )
    results["frame_640x480"] = latency

    tmp = Path(tempfile.mkdtemp(prefix="ferlab-bench-"))
    image = tmp / "frame.jpg"
    cv2.imwrite(str(image), frame)
    cold = {}
    named = str(Path(model).resolve()) if Path(model).exists() else model  # the commands run in a temporary folder
    ways = [("default", ["--model", named])]
    ways += [("keras_haar", ["--model", named, "--runtime", "keras", "--detector", "haar"])] if "keras" in runtimes else []
    ways += [("no_model_named_empty_folder", [])]  # a fresh install: the rule falls through to the shipped model
    env = {k: v for k, v in os.environ.items() if k not in ("FERLAB_MODEL", "MLFLOW_TRACKING_URI")}
    for label, extra in ways:
        command = [sys.executable, "-m", "ferlab.cli", "detect", str(image), "--json", *extra]
        runs = []
        for _ in range(args.cold_runs):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=tmp, env=env)
            runs.append(time.perf_counter() - start)
        cold[label] = {"median_s": round(statistics.median(runs), 2), "runs": [round(r, 2) for r in runs], "command": command[3:]}
        print(
            f"cold start, `ferlab detect` one image ({label}): {statistics.median(runs):.2f} s "
            f"(median of {len(runs)}, {min(runs):.2f}-{max(runs):.2f})"
        )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ferlab.cli", "--help"], check=True, capture_output=True)
    cold["help_s"] = round(time.perf_counter() - start, 2)
    results["cold_start"] = cold

    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
