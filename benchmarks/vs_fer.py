"""ferlab against the `fer` package on the same 640x480 frames: latency, face recall, accuracy.

Setup (benchmark only, never a ferlab dependency). fer's declared dependencies pull
facenet-pytorch and a CUDA build of torch for an MTCNN this benchmark does not use, so:
    pip install --no-deps "fer==25.10.3" "setuptools<81"
Run by hand on an otherwise idle machine, from the project root, after `dvc repro`:
    python benchmarks/vs_fer.py [--frames 100] [--model models/model.h5]
Frames: PrivateTest faces, each enlarged to 160x160 inside a 640x480 frame (edges stretched),
plus scikit-image's astronaut photo. Both tools see the same frames in the same order,
alternating per frame. Writes reports/benchmarks/vs_fer.json.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np

from ferlab.data import arrays as arrays_mod
from ferlab.fileio import write_json
from ferlab.labels import EMOTIONS
from ferlab.predict import EmotionRecognizer

OUT = Path("reports/benchmarks/vs_fer.json")


def frame_of(face: np.ndarray, side: int = 160, size=(480, 640), at=(240, 160)) -> np.ndarray:
    x, y = at
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    grey = cv2.copyMakeBorder(big, y, size[0] - y - side, x, size[1] - x - side, cv2.BORDER_REPLICATE)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def astronaut_frame() -> np.ndarray:
    from skimage import data

    return cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (640, 480))


def quartiles(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4)
    return {"median_ms": round(statistics.median(values) * 1000, 2), "p25_ms": round(q[0] * 1000, 2),
            "p75_ms": round(q[2] * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--model", default="models/model.h5")
    parser.add_argument("--processed", default="data/processed")
    args = parser.parse_args()

    from fer.fer import FER

    data = arrays_mod.load(Path(args.processed) / arrays_mod.ARRAY_FILE)
    idx = np.random.default_rng(0).choice(len(data.y["test"]), args.frames, replace=False)
    frames = [frame_of(data.x["test"][i]) for i in idx]
    truth = [EMOTIONS[data.y["test"][i]] for i in idx]

    ours, theirs = EmotionRecognizer.load(args.model), FER(mtcnn=False)
    for frame in frames[:3]:  # warm-up: graph tracing, lazy loads
        ours.predict(frame)
        theirs.detect_emotions(frame)
    timing = {"ferlab": [], "fer": []}
    found = {"ferlab": 0, "fer": 0}
    correct = {"ferlab": 0, "fer": 0}
    for frame, label in zip(frames, truth):
        start = time.perf_counter()
        faces = ours.predict(frame)
        timing["ferlab"].append(time.perf_counter() - start)
        start = time.perf_counter()
        result = theirs.detect_emotions(frame)
        timing["fer"].append(time.perf_counter() - start)
        if faces:
            found["ferlab"] += 1
            correct["ferlab"] += faces[0].emotion == label
        if result:
            found["fer"] += 1
            correct["fer"] += max(result[0]["emotions"], key=result[0]["emotions"].get) == label

    astronaut = astronaut_frame()
    summary = {"frames": len(frames), "frame_size": [640, 480], "model": args.model}
    for tool in ("ferlab", "fer"):
        summary[tool] = quartiles(timing[tool]) | {
            "face_recall": round(found[tool] / len(frames), 3),
            "accuracy_on_found": round(correct[tool] / max(found[tool], 1), 3)}
    summary["ferlab"]["astronaut"] = [f.to_dict() for f in ours.predict(astronaut)]
    summary["fer"]["astronaut"] = [{"box": [int(v) for v in r["box"]], "emotions": {k: float(v) for k, v in r["emotions"].items()}}
                                   for r in theirs.detect_emotions(astronaut)]
    summary["speedup_median"] = round(summary["fer"]["median_ms"] / summary["ferlab"]["median_ms"], 2)
    for tool in ("ferlab", "fer"):
        s = summary[tool]
        print(f"{tool:7s} median {s['median_ms']:7.2f} ms (p25 {s['p25_ms']}, p75 {s['p75_ms']}); "
              f"face recall {s['face_recall']:.3f}; accuracy on found faces {s['accuracy_on_found']:.3f}")
    print(f"ferlab is {summary['speedup_median']}x faster (median per frame)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_json(OUT, summary)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
