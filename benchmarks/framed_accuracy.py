"""The whole pipeline (detector, crop, classifier, flip TTA) on PublicTest faces framed as photos
frame faces: at several sizes, off-centre and tilted. A selection aid for real photos, on the
selection split only (PrivateTest is never used here).

Each face is enlarged to a random side of 96-240 px, placed at a random position of a 640x480
frame (edges stretched), and the frame is turned by a random angle of up to --max-angle degrees
about the face's centre; the same frames go to every model. `upright` is the same faces at 160 px,
centred and level (vs_fer.py's framing). A face is found when a box's centre lies within 30% of
the face's side of the face's centre; accuracy counts found faces.

Run by hand from the project root, after `dvc repro`:
    python benchmarks/framed_accuracy.py --model models/bundle --model other/model.h5 [--faces 1000] [--no-align] [--tta ten-crop]
Writes reports/benchmarks/framed_accuracy.json (or --out).
"""

import argparse
from pathlib import Path

import cv2
import numpy as np

from ferlab.data import arrays as arrays_mod
from ferlab.fileio import write_json
from ferlab.inference.predict import DEFAULT_TTA, TTA_MODES, EmotionRecognizer

OUT = Path("reports/benchmarks/framed_accuracy.json")
FRAME = (480, 640)


def framed(face: np.ndarray, side: int, centre: tuple[int, int], angle: float) -> np.ndarray:
    """A BGR frame holding `face` at `side` px centred on `centre`, turned by `angle` degrees."""
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    x, y = centre[0] - side // 2, centre[1] - side // 2
    grey = cv2.copyMakeBorder(big, y, FRAME[0] - y - side, x, FRAME[1] - x - side, cv2.BORDER_REPLICATE)
    if angle:
        turn = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
        grey = cv2.warpAffine(grey, turn, (FRAME[1], FRAME[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def scenes(faces: np.ndarray, seed: int, max_angle: float, upright: bool):
    rng = np.random.default_rng(seed)
    for face in faces:
        side = 160 if upright else int(rng.integers(96, 241))
        centre = (
            (320, 240)
            if upright
            else (int(rng.integers(side // 2, FRAME[1] - side // 2)), int(rng.integers(side // 2, FRAME[0] - side // 2)))
        )
        angle = 0.0 if upright else float(rng.uniform(-max_angle, max_angle))
        yield framed(face, side, centre, angle), centre, side


def score(recognizer: EmotionRecognizer, faces: np.ndarray, labels: np.ndarray, seed: int, max_angle: float, upright: bool) -> dict:
    found = right = 0
    for (frame, centre, side), label in zip(scenes(faces, seed, max_angle, upright), labels):
        hits = [
            f
            for f in recognizer.predict(frame)
            if np.hypot(f.box[0] + f.box[2] / 2 - centre[0], f.box[1] + f.box[3] / 2 - centre[1]) < 0.3 * side
        ]
        if hits:
            found += 1
            right += int(np.argmax(list(hits[0].probabilities.values())) == label)
    return {"faces": int(len(labels)), "recall": round(found / len(labels), 4), "accuracy_on_found": round(right / max(found, 1), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="a bundle folder, .h5 or .tflite (repeat to compare)")
    parser.add_argument("--faces", type=int, default=1000)
    parser.add_argument("--max-angle", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processed", default="data/processed")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the JSON goes (default {OUT})")
    parser.add_argument(
        "--align", action=argparse.BooleanOptionalAction, default=None, help="level the eyes (default: the model's contract, on)"
    )
    parser.add_argument("--tta", choices=TTA_MODES, default=DEFAULT_TTA, help="test-time augmentation (default: %(default)s, the tools')")
    args = parser.parse_args()

    data = arrays_mod.load(Path(args.processed) / arrays_mod.ARRAY_FILE)
    pick = np.random.default_rng(args.seed).choice(len(data.y["val"]), min(args.faces, len(data.y["val"])), replace=False)
    faces, labels = data.x["val"][pick], data.y["val"][pick].astype(int)
    results = {}
    for source in args.model:
        recognizer = EmotionRecognizer.load(source, align=args.align, tta=args.tta)
        results[source] = {
            "align": recognizer.contract.align,
            "tta": recognizer.tta,
            "framed": score(recognizer, faces, labels, args.seed, args.max_angle, upright=False),
            "upright": score(recognizer, faces, labels, args.seed, args.max_angle, upright=True),
        }
        print(f"{source}: framed {results[source]['framed']}, upright {results[source]['upright']}", flush=True)
    write_json(args.out, {"split": "PublicTest", "max_angle": args.max_angle, "seed": args.seed, "results": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
