"""Inference speed: classifier throughput, end-to-end latency per 640x480 frame, cold start of `ferlab detect`.

Run by hand from the project root on an otherwise idle machine (never in CI):
    python benchmarks/inference.py [--model models/model.h5] [--detectors haar mtcnn] [--repeats 30]
Prints the figures and writes them to reports/benchmarks/inference.json. Without a trained
model it times an untrained ferlab_cnn: the speed of a forward pass does not depend on
the weights. The frame is scikit-image's astronaut photo (one face) scaled to 640x480,
or, without scikit-image, a FER2013-sized grey face enlarged into such a frame.
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
from ferlab.detect import CropContract
from ferlab.predict import DEFAULT_MODEL, EmotionRecognizer, load_model

OUT = Path("reports/benchmarks/inference.json")


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_frame() -> np.ndarray:
    try:
        from skimage.data import astronaut

        return cv2.resize(astronaut()[..., ::-1], (640, 480), interpolation=cv2.INTER_AREA)
    except ImportError:
        rng = np.random.default_rng(0)
        face = cv2.GaussianBlur(rng.integers(0, 256, (48, 48), dtype=np.uint8), (5, 5), 0)
        frame = cv2.copyMakeBorder(cv2.resize(face, (200, 200)), 140, 140, 220, 220, cv2.BORDER_REPLICATE)
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--detectors", nargs="+", default=["haar", "mtcnn"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32, 256, 1024])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--cold-runs", type=int, default=3)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    tmp = Path(tempfile.mkdtemp(prefix="ferlab-bench-"))
    model_path = Path(args.model)
    if model_path.exists():
        model, contract = load_model(model_path)
        model_note = str(model_path)
    else:
        from ferlab import models
        from ferlab.model_io import save_h5

        model, contract = models.build("ferlab_cnn"), None
        model_path = tmp / "model.h5"
        save_h5(model, model_path)
        model_note = f"untrained ferlab_cnn ({args.model} not found; speed does not depend on the weights)"
    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
                    "tensorflow": tf.__version__, "keras": keras.__version__, "opencv": cv2.__version__},
        "model": model_note, "parameters": int(model.count_params()), "repeats": args.repeats,
    }

    recognizer = EmotionRecognizer(model, "haar")
    rng = np.random.default_rng(0)
    throughput = {}
    for batch in args.batches:
        faces = rng.integers(0, 256, (batch, 48, 48), dtype=np.uint8)
        seconds = median_seconds(lambda: recognizer.classify(faces), max(3, args.repeats // max(1, batch // 64)))
        throughput[str(batch)] = {"ms_per_batch": round(seconds * 1000, 2), "faces_per_s": round(batch / seconds, 1)}
        print(f"classifier, batch {batch:5d}: {seconds * 1000:8.2f} ms/batch, {batch / seconds:9.1f} faces/s")
    results["classifier_throughput"] = throughput

    frame = test_frame()
    latency = {}
    for name in args.detectors:
        try:
            r = EmotionRecognizer(model, name, contract or CropContract())
            found = len(r.predict(frame))
        except Exception as err:  # e.g. mtcnn not installed: report and go on
            latency[name] = {"error": str(err)}
            print(f"{name}: skipped ({err})")
            continue
        detect_s = median_seconds(lambda: r.detector.detect(frame), args.repeats)
        total_s = median_seconds(lambda: r.predict(frame), args.repeats)
        latency[name] = {"faces": found, "detect_ms": round(detect_s * 1000, 2), "end_to_end_ms": round(total_s * 1000, 2),
                         "fps": round(1 / total_s, 1)}
        print(f"640x480 frame, {name}: {found} face(s), detection {detect_s * 1000:.1f} ms, "
              f"end to end {total_s * 1000:.1f} ms ({1 / total_s:.1f} FPS)")
    results["frame_640x480"] = latency

    image = tmp / "frame.jpg"
    cv2.imwrite(str(image), frame)
    command = [sys.executable, "-m", "ferlab.cli", "detect", str(image), "--json", "--model", str(model_path)]
    cold = []
    for _ in range(args.cold_runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        cold.append(time.perf_counter() - start)
    help_start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ferlab.cli", "--help"], check=True, capture_output=True)
    results["cold_start_s"] = {"detect_one_image": round(statistics.median(cold), 2), "runs": [round(c, 2) for c in cold],
                               "help": round(time.perf_counter() - help_start, 2)}
    print(f"cold start, `ferlab detect` on one image: {statistics.median(cold):.2f} s (median of {len(cold)}); "
          f"`ferlab --help`: {results['cold_start_s']['help']:.2f} s")

    write_json(OUT, results)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
