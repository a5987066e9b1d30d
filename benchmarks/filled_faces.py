"""Faces that fill the image, as in a cropped portrait: how many the detector finds, and names
right, with and without the second look at the image framed (EmotionRecognizer's fill_pad); and
the boxes it finds in photos without a face. A selection aid, on PublicTest only.

Each picked PublicTest face is enlarged to --side px and is the whole image. The no-face set is
scikit-image's sample images that show no human face.

Run by hand from the project root, after `dvc repro`:
    python benchmarks/filled_faces.py [--model models/bundle] [--faces 300] [--side 256] [--pads 0 0.5 1.0]
Writes reports/benchmarks/filled_faces.json (or --out).
"""

import argparse
from pathlib import Path

import cv2
import numpy as np

from ferlab.contract import EMOTIONS
from ferlab.data import arrays as arrays_mod
from ferlab.fileio import write_json
from ferlab.inference.predict import FILL_PAD, EmotionRecognizer

OUT = Path("reports/benchmarks/filled_faces.json")
NO_FACE = ("coffee", "chelsea", "rocket", "coins", "text", "moon", "page", "horse", "hubble_deep_field", "immunohistochemistry")
NO_FACE += ("brick", "grass", "gravel", "cell", "checkerboard", "clock", "colorwheel", "logo")


def no_face_images() -> dict[str, np.ndarray]:
    """scikit-image's sample images without a human face, as BGR uint8."""
    import skimage.data

    images = {}
    for name in NO_FACE:
        image = np.asarray(getattr(skimage.data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        elif image.dtype != np.uint8:
            image = cv2.normalize(image.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, 2::-1]
        images[name] = np.ascontiguousarray(image)
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a bundle folder, .h5 or .tflite (default: the tools')")
    parser.add_argument("--faces", type=int, default=300)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--pads", type=float, nargs="+", default=[0.0, 0.5, 1.0], help=f"fill_pad values (the tools': {FILL_PAD})")
    parser.add_argument("--detectors", nargs="+", default=["blazeface", "haar"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processed", default="data/processed")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    data = arrays_mod.load(Path(args.processed) / arrays_mod.ARRAY_FILE)
    pick = np.random.default_rng(args.seed).choice(len(data.y["val"]), min(args.faces, len(data.y["val"])), replace=False)
    side = (args.side, args.side)
    portraits = [cv2.cvtColor(cv2.resize(f, side, interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR) for f in data.x["val"][pick]]
    labels = [EMOTIONS[y] for y in data.y["val"][pick]]
    empty = no_face_images()
    base = EmotionRecognizer.load(args.model)
    results = []
    for detector in args.detectors:
        for pad in args.pads:
            recognizer = EmotionRecognizer(base.classifier, detector, base.contract, base.max_pixels, base.tta, fill_pad=pad)
            answers = [recognizer.predict(p) for p in portraits]
            found = [a[0].emotion for a in answers if a]
            right = sum(a[0].emotion == label for a, label in zip(answers, labels) if a)
            boxes = {name: len(recognizer.predict(image)) for name, image in empty.items()}
            results.append(
                {
                    "detector": detector,
                    "fill_pad": pad,
                    "found": len(found),
                    "named_right": right,
                    "accuracy_on_found": round(right / max(len(found), 1), 4),
                    "boxes_in_images_without_a_face": sum(boxes.values()),
                    "boxes_by_image": {k: v for k, v in boxes.items() if v},
                }
            )
            r = results[-1]
            print(
                f"{detector:9s} fill_pad {pad:4.2f}: found {r['found']}/{len(portraits)}, named right {right} "
                f"({r['accuracy_on_found']:.3f} of found); "
                f"boxes in {len(empty)} images without a face: {r['boxes_in_images_without_a_face']}",
                flush=True,
            )
    write_json(
        args.out,
        {"split": "PublicTest", "faces": len(portraits), "side": args.side, "seed": args.seed, "tta": base.tta, "results": results},
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
