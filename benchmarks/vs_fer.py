"""ferlab against the `fer` package on the same 640x480 frames: latency, face recall, accuracy.

Setup (benchmark only, never a ferlab dependency). fer's declared dependencies pull
facenet-pytorch and a CUDA build of torch for an MTCNN this benchmark does not use, so:
    pip install --no-deps "fer==25.10.3" "setuptools<81"
Run by hand on an otherwise idle machine, from the project root, after `dvc repro`:
    python benchmarks/vs_fer.py [--frames 100] [--model models/bundle]
or, for several models with the tools' defaults (blazeface, flip) against fer on the same frames:
    python benchmarks/vs_fer.py --models pretrained:fast pretrained:accurate --out reports/benchmarks/vs_fer_pretrained.json
Frames: PrivateTest faces, each enlarged to 160x160 inside a 640x480 frame (edges stretched),
plus scikit-image's astronaut photo. A face is found when a box is centred within 30 px of
the face's centre; other boxes are counted as boxes off the face. ferlab runs five ways: its default
detector (blazeface), haar (the paper's), blazeface without test-time augmentation (`--tta none`),
blazeface with ten-crop TTA (`--tta ten-crop`) and with scale-rotate TTA (`--tta scale-rotate`); the
first two use the default TTA, flip. All run the
default model runtime (the bundle's TFLite model where there is one) and see the same frames in the same
order, alternating per frame. Writes reports/benchmarks/vs_fer.json (or --out).
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from ferlab.contract import EMOTIONS
from ferlab.data import arrays as arrays_mod
from ferlab.fileio import write_json
from ferlab.inference.predict import EmotionRecognizer
from ferlab.inference.sources import resolve

OUT = Path("reports/benchmarks/vs_fer.json")


def frame_of(face: np.ndarray, side: int = 160, size=(480, 640), at=(240, 160)) -> np.ndarray:
    x, y = at
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    grey = cv2.copyMakeBorder(big, y, size[0] - y - side, x, size[1] - x - side, cv2.BORDER_REPLICATE)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def astronaut_frame() -> np.ndarray:
    from skimage import data

    return cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (640, 480))


def cpu_name() -> str:
    """The CPU's model name and family (family 23 is AMD Zen 1/2, 25 Zen 3/4, 26 Zen 5)."""
    info = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)}
    return f"{info.get('model name', '?')}, family {info.get('cpu family', '?')}, {os.cpu_count()} CPUs"


def quartiles(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4)
    return {"median_ms": round(statistics.median(values) * 1000, 2), "p25_ms": round(q[0] * 1000, 2), "p75_ms": round(q[2] * 1000, 2)}


FACE_CENTRE = (240 + 80, 160 + 80)  # frame_of puts the 160x160 face at (240, 160)


def boxes_and_emotions(result) -> list[tuple[tuple, str]]:
    if result and hasattr(result[0], "emotion"):
        return [(f.box, f.emotion) for f in result]
    return [(tuple(r["box"]), max(r["emotions"], key=r["emotions"].get)) for r in result]


def on_face(box) -> bool:
    x, y, w, h = box
    return abs(x + w / 2 - FACE_CENTRE[0]) < 30 and abs(y + h / 2 - FACE_CENTRE[1]) < 30


def measure(tools: dict, frames: list, truth: list) -> dict:
    """Each tool on every frame, alternating per frame: latency quartiles, face recall, boxes off the face, accuracy."""
    for frame in frames[:3]:  # warm-up: graph tracing, lazy loads
        for run in tools.values():
            run(frame)
    timing = {name: [] for name in tools}
    found = {name: 0 for name in tools}
    correct = {name: 0 for name in tools}
    spurious = {name: 0 for name in tools}
    for frame, label in zip(frames, truth):
        for name, run in tools.items():
            start = time.perf_counter()
            result = run(frame)
            timing[name].append(time.perf_counter() - start)
            faces = boxes_and_emotions(result)
            hits = [emotion for box, emotion in faces if on_face(box)]
            spurious[name] += len(faces) - len(hits)
            if hits:
                found[name] += 1
                correct[name] += hits[0] == label
    return {
        name: quartiles(timing[name])
        | {
            "face_recall": round(found[name] / len(frames), 3),
            "boxes_off_the_face": spurious[name],
            "accuracy_on_found": round(correct[name] / max(found[name], 1), 3),
        }
        for name in tools
    }


def compare_models(args, frames: list, truth: list) -> None:
    from fer.fer import FER

    recognizers = {model: EmotionRecognizer.load(model) for model in args.models}
    measured = measure({**{m: r.predict for m, r in recognizers.items()}, "fer": FER(mtcnn=False).detect_emotions}, frames, truth)
    summary = {
        "frames": len(frames),
        "frame_size": [640, 480],
        "cpu": cpu_name(),
        "ferlab_detector": next(iter(recognizers.values())).detector_name,
        "ferlab_tta": next(iter(recognizers.values())).tta,
        "ferlab": {m: measured[m] | {"runtime": r.classifier.runtime} for m, r in recognizers.items()},
        "fer": measured["fer"],
    }
    for name, s in [*summary["ferlab"].items(), ("fer", summary["fer"])]:
        if name != "fer":
            s["speedup_median"] = round(summary["fer"]["median_ms"] / s["median_ms"], 2)
        print(
            f"{name:10s} median {s['median_ms']:7.2f} ms (p25 {s['p25_ms']}, p75 {s['p75_ms']}); face recall {s['face_recall']:.3f}; "
            f"boxes off the face {s['boxes_off_the_face']}; accuracy on found faces {s['accuracy_on_found']:.3f}"
            + (f"; {s['speedup_median']}x fer" if name != "fer" else "")
        )
    write_json(args.out, summary)
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--model", default=None, help="default: the model the tools use (ferlab.inference.sources.resolve)")
    parser.add_argument("--models", nargs="+", help="instead of --model's five ways: these models, each with the tools' defaults")
    parser.add_argument("--processed", default="data/processed")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the JSON goes (default {OUT})")
    args = parser.parse_args()

    from fer.fer import FER

    data = arrays_mod.load(Path(args.processed) / arrays_mod.ARRAY_FILE)
    idx = np.random.default_rng(0).choice(len(data.y["test"]), args.frames, replace=False)
    frames = [frame_of(data.x["test"][i]) for i in idx]
    truth = [EMOTIONS[data.y["test"][i]] for i in idx]

    if args.models:
        compare_models(args, frames, truth)
        return
    model = resolve(args.model).source
    ours = EmotionRecognizer.load(model)
    tools = {
        "ferlab": ours.predict,
        "ferlab_haar": EmotionRecognizer(ours.classifier, "haar", ours.contract).predict,
        "ferlab_no_tta": EmotionRecognizer(ours.classifier, ours.detector_name, ours.contract, tta="none").predict,
        "ferlab_ten_crop": EmotionRecognizer(ours.classifier, ours.detector_name, ours.contract, tta="ten-crop").predict,
        "ferlab_scale_rotate": EmotionRecognizer(ours.classifier, ours.detector_name, ours.contract, tta="scale-rotate").predict,
        "fer": FER(mtcnn=False).detect_emotions,
    }

    measured = measure(tools, frames, truth)
    astronaut = astronaut_frame()
    summary = {
        "frames": len(frames),
        "frame_size": [640, 480],
        "model": model,
        "cpu": cpu_name(),
        "classifier_runtime": ours.classifier.runtime,
        "ferlab_detector": ours.detector_name,
    }
    summary |= measured
    for name in ("ferlab", "ferlab_haar"):
        summary[name]["astronaut"] = [f.to_dict() for f in tools[name](astronaut)]
    summary["fer"]["astronaut"] = [
        {"box": [int(v) for v in r["box"]], "emotions": {k: float(v) for k, v in r["emotions"].items()}} for r in tools["fer"](astronaut)
    ]
    summary["ferlab_tta"] = ours.tta
    for name in ("ferlab", "ferlab_haar", "ferlab_no_tta", "ferlab_ten_crop", "ferlab_scale_rotate"):
        summary[f"speedup_median_{name}"] = round(summary["fer"]["median_ms"] / summary[name]["median_ms"], 2)
    for tool in tools:
        s = summary[tool]
        print(
            f"{tool:19s} median {s['median_ms']:7.2f} ms (p25 {s['p25_ms']}, p75 {s['p75_ms']}); "
            f"face recall {s['face_recall']:.3f}; boxes off the face {s['boxes_off_the_face']}; "
            f"accuracy on found faces {s['accuracy_on_found']:.3f}"
        )
    print(
        f"ferlab is {summary['speedup_median_ferlab']}x faster than fer (median per frame); "
        f"with haar {summary['speedup_median_ferlab_haar']}x"
    )
    write_json(args.out, summary)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
