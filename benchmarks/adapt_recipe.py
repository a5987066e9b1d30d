"""The fine-tuning recipe of `ferlab adapt`, measured on stand-ins for "a new camera".

FER2013 PublicTest faces (never trained on; the default model selected its epoch on them) degraded in a
fixed way and written as JPEG face crops into emotion folders, as a user's set would be:

    python benchmarks/adapt_recipe.py make --camera a --out /tmp/ferlab-adapt/camera_a   # tighter, blurred, washed out
    python benchmarks/adapt_recipe.py make --camera b --out /tmp/ferlab-adapt/camera_b   # looser, turned, dark, noisy

Then recipes (which layers train, the rate, the epochs, augmentation, class weights) on a set's 80/20 split
(ferlab.data.split, seed 0), each scored on the held-out 20% and on PrivateTest, both with flip TTA:

    python benchmarks/adapt_recipe.py trial /tmp/ferlab-adapt/camera_b --out reports/benchmarks/adapt_recipe_camera_b.json

The recipe was chosen on camera b; camera a is what `ferlab adapt` itself is measured on (docs/inference/adapt.md):

    ferlab adapt /tmp/ferlab-adapt/camera_a --face-crop --model models/bundle --out /tmp/ferlab-adapt/a0   # and --seed 1, ...
    python benchmarks/adapt_recipe.py collect /tmp/ferlab-adapt/a0 ... --out reports/benchmarks/adapt_camera_a.json

(`collect` keeps each adapted bundle's adapt.json figures, without the per-epoch history.)
Images never enter the repository: the sets are written to a temporary folder.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ferlab.contract import EMOTIONS, VAL_SPLIT  # noqa: E402

ARCHIVE = Path(os.environ.get("FERLAB_FER2013_ARCHIVE", Path(__file__).resolve().parents[2] / "shared" / "fer2013" / "archive.zip"))


def camera_a(face: np.ndarray) -> np.ndarray:
    """Tighter and shifted framing (42x42 of the 48x48, 2 px off centre), 96x96 pixels, blurred
    (sigma 1.6 px), washed out (contrast x0.7, +60 grey levels)."""
    crop = face[3:45, 5:47]
    big = cv2.resize(crop, (96, 96), interpolation=cv2.INTER_CUBIC)
    big = cv2.GaussianBlur(big, (0, 0), 1.6)
    return np.clip(big.astype(np.float32) * 0.7 + 60.0, 0, 255).astype(np.uint8)


def camera_b(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Looser framing (6 px of reflected border each side), turned 7 degrees, 64x64 pixels, dark
    (x0.75, -20 grey levels), sensor noise (sigma 6 grey levels)."""
    loose = cv2.copyMakeBorder(face, 6, 6, 6, 6, cv2.BORDER_REFLECT_101)
    centre = (loose.shape[1] / 2, loose.shape[0] / 2)
    turned = cv2.warpAffine(loose, cv2.getRotationMatrix2D(centre, 7.0, 1.0), loose.shape[::-1], borderMode=cv2.BORDER_REFLECT_101)
    small = cv2.resize(turned, (64, 64), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return np.clip(small * 0.75 - 20.0 + rng.normal(0, 6, small.shape), 0, 255).astype(np.uint8)


def make(args) -> None:
    from ferlab.data.readers import read_image_archive
    from ferlab.data.table import images_of

    table = read_image_archive(ARCHIVE).table
    table = table[table["split"] == VAL_SPLIT]
    faces, labels, ids = images_of(table), table["label"].to_numpy(), table["id"].to_numpy()
    rng = np.random.default_rng(0)
    out = Path(args.out)
    quality = {"a": 30, "b": 50}[args.camera]
    for face, label, image_id in zip(faces, labels, ids):
        folder = out / EMOTIONS[label]
        folder.mkdir(parents=True, exist_ok=True)
        picture = camera_a(face) if args.camera == "a" else camera_b(face, rng)
        cv2.imwrite(str(folder / f"{Path(image_id).name}.jpg"), picture, [cv2.IMWRITE_JPEG_QUALITY, quality])
    print(f"wrote {len(faces)} PublicTest faces as camera {args.camera} to {out}")


def read_set(folder: str) -> tuple[np.ndarray, np.ndarray]:
    from ferlab.inference import labelled_set
    from ferlab.inference.predict import EmotionRecognizer

    found = labelled_set.read(folder)
    recognizer = EmotionRecognizer(None)
    faces = np.stack([recognizer.crops(path, face_crop=True)[1][0] for path, _ in found.items])
    return faces, np.array([EMOTIONS.index(label) for _, label in found.items])


def private_test() -> tuple[np.ndarray, np.ndarray]:
    from ferlab import config
    from ferlab.data import arrays as arrays_mod

    arrays = arrays_mod.load(Path(config.current().paths.processed) / arrays_mod.ARRAY_FILE)
    return arrays.x["test"], arrays.y["test"].astype(int)


RECIPES = {
    "renormalised-only": {"batch_norm": "renormalised", "epochs": 0},
    "all-3e-4-renormalised": {"layers": "all", "learning_rate": 3e-4, "batch_norm": "renormalised"},
    "all-3e-4-bn-trained": {"layers": "all", "learning_rate": 3e-4, "batch_norm": "trained"},
    "head-1e-3-renormalised": {"layers": "head", "learning_rate": 1e-3, "batch_norm": "renormalised"},
    "head-1e-3": {"layers": "head", "learning_rate": 1e-3},
    "dense-1e-3": {"layers": "dense", "learning_rate": 1e-3},
    "all-1e-4": {"layers": "all", "learning_rate": 1e-4},
    "all-3e-4": {"layers": "all", "learning_rate": 3e-4},
    "all-1e-3": {"layers": "all", "learning_rate": 1e-3},
    "all-3e-4-noaug": {"layers": "all", "learning_rate": 3e-4, "augment": "none"},
    "all-3e-4-noweights": {"layers": "all", "learning_rate": 3e-4, "class_weights": "none"},
    "all-3e-4-steps300": {"layers": "all", "learning_rate": 3e-4, "steps": 300},
    "all-3e-4-steps1200": {"layers": "all", "learning_rate": 3e-4, "steps": 1200},
    "dense-1e-3-renormalised": {"layers": "dense", "learning_rate": 1e-3, "batch_norm": "renormalised"},
    "dense-3e-4-renormalised": {"layers": "dense", "learning_rate": 3e-4, "batch_norm": "renormalised"},
    "dense-3e-3-renormalised": {"layers": "dense", "learning_rate": 3e-3, "batch_norm": "renormalised"},
    "dense-1e-3-renormalised-noaug": {"layers": "dense", "learning_rate": 1e-3, "batch_norm": "renormalised", "augment": "none"},
    "dense-1e-3-renormalised-noweights": {"layers": "dense", "learning_rate": 1e-3, "batch_norm": "renormalised", "class_weights": "none"},
    "dense-1e-3-renormalised-steps1200": {"layers": "dense", "learning_rate": 1e-3, "batch_norm": "renormalised", "steps": 1200},
}


def recipe_of(spec: dict):
    from ferlab.config import Augment
    from ferlab.training import finetune

    spec = dict(spec)
    if spec.get("augment") == "none":
        spec["augment"] = Augment(
            horizontal_flip=False, translate=0, rotation_degrees=0, zoom=0, low_resolution_probability=0, brightness=0, contrast=0
        )
    return finetune.Recipe(**spec)


def trial(args) -> None:
    from ferlab.data.split import stratified_split
    from ferlab.training import finetune
    from ferlab.training.evaluate import probabilities, scores
    from ferlab.training.model_io import load_h5

    faces, labels = read_set(args.folder)
    if args.limit:  # a smaller set: the first `limit` faces per class of a seeded permutation
        keep = np.concatenate([np.random.default_rng(1).permutation(np.flatnonzero(labels == c))[: args.limit] for c in range(7)])
        faces, labels = faces[np.sort(keep)], labels[np.sort(keep)]
    val = stratified_split(labels, 0.2, seed=0)
    x_test, y_test = private_test()
    parent = load_h5(args.model)

    def judge(model) -> dict:
        p_val = probabilities(model, faces[val], "flip")
        p_test = probabilities(model, x_test, "flip")
        v, t = scores(labels[val], p_val.argmax(1)), scores(y_test, p_test.argmax(1))
        return {"val_accuracy": round(v["accuracy"], 4), "val_macro_f1": round(v["macro_f1"], 4), "test_accuracy": round(t["accuracy"], 4)}

    results = {"set": args.folder, "faces": int(len(labels)), "train": int((~val).sum()), "val": int(val.sum()), "model": args.model}
    results["before"] = judge(parent)
    print(f"before: {results['before']}", flush=True)
    results["trials"] = {}
    for name in args.recipes or RECIPES:
        recipe = recipe_of(RECIPES[name])
        started = time.monotonic()
        tuned = finetune.fine_tune(finetune.with_emotions(parent, list(range(7))), faces[~val], labels[~val], recipe, print_fn=None)
        row = judge(tuned.model) | {"epochs": tuned.epochs, "train_seconds": tuned.seconds, "seconds": round(time.monotonic() - started, 1)}
        row["recipe"] = {k: v for k, v in recipe.describe().items() if k != "augment"} | {"augment": dataclasses.asdict(recipe.augment)}
        results["trials"][name] = row
        print(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'recipe'})}", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def collect(args) -> None:
    from ferlab.lifecycle import tracking

    runs = {}
    for folder in args.bundles:
        report = json.loads((Path(folder) / "adapt.json").read_text())
        runs[Path(folder).name] = {k: v for k, v in report.items() if k != "history"}
    result = {"cpu": tracking.hardware(), "note": args.note, "runs": runs}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, r in runs.items():
        v, t = r["validation"], r["privatetest"]
        print(
            f"{name}: validation {v['before']['accuracy']:.4f} -> {v['after']['accuracy']:.4f} {v['gain']['accuracy_ci']}, "
            f"PrivateTest {t.get('before', {}).get('accuracy')} -> {t.get('after', {}).get('accuracy')}, {r['minutes']} min"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    maker = sub.add_parser("make", help="write a degraded PublicTest set")
    maker.add_argument("--camera", choices=("a", "b"), required=True)
    maker.add_argument("--out", required=True)
    runner = sub.add_parser("trial", help="fine-tuning recipes on a set")
    runner.add_argument("folder")
    runner.add_argument("--model", default="models/bundle/model.h5")
    runner.add_argument("--recipes", nargs="*", choices=sorted(RECIPES))
    runner.add_argument("--limit", type=int, help="at most this many faces per class")
    runner.add_argument("--out")
    gather = sub.add_parser("collect", help="the figures of adapted bundles (their adapt.json) in one report")
    gather.add_argument("bundles", nargs="+")
    gather.add_argument("--note", default="")
    gather.add_argument("--out", required=True)
    args = parser.parse_args()
    {"make": make, "trial": trial, "collect": collect}[args.command](args)


if __name__ == "__main__":
    main()
