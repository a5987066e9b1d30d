"""Faces that fill most of the image, as in a cropped portrait or a passport photo: how many the
detector finds, and names right, with and without the second look at the image framed
(EmotionRecognizer's fill_pad, detect.FILL_MIN_SHARE); and the boxes it finds in images without
a face. A selection aid, on PublicTest only.

Each picked PublicTest face is enlarged to --ratios x --side px and put in the middle of a grey
--side x --side image (ratio 1: the face is the whole image). The no-face set is scikit-image's
sample images that show no human face, and 20 random square crops of each at --side px.

Run by hand from the project root, after `dvc repro`:
    python benchmarks/filled_faces.py [--model models/bundle] [--faces 300] [--side 256] [--pads 0 1.0] [--shares 0.5 0.3]
Writes reports/benchmarks/filled_faces.json (or --out).
"""

import argparse
from pathlib import Path

import cv2
import numpy as np

from ferlab.contract import EMOTIONS
from ferlab.data import arrays as arrays_mod
from ferlab.fileio import write_json
from ferlab.inference import detect
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


def no_face_crops(images: dict[str, np.ndarray], side: int, per_image: int, seed: int) -> dict[str, np.ndarray]:
    """`per_image` random square crops of each image (a quarter of its shorter side or more), at side x side px."""
    rng = np.random.default_rng(seed)
    crops = {}
    for name, image in images.items():
        h, w = image.shape[:2]
        for i in range(per_image):
            s = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
            y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            crops[f"{name}-{i}"] = cv2.resize(image[y : y + s, x : x + s], (side, side), interpolation=cv2.INTER_AREA)
    return crops


def portrait(face: np.ndarray, side: int, ratio: float) -> np.ndarray:
    """A grey side x side BGR image with `face` enlarged to ratio x side in its middle."""
    size = int(round(side * ratio))
    canvas = np.full((side, side), 128, np.uint8)
    at = (side - size) // 2
    canvas[at : at + size, at : at + size] = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a bundle folder, .h5 or .tflite (default: the tools')")
    parser.add_argument("--faces", type=int, default=300)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.55, 0.7, 0.85, 1.0], help="the face's share of the image's side")
    parser.add_argument("--pads", type=float, nargs="+", default=[0.0, 1.0], help=f"fill_pad values (the tools': {FILL_PAD})")
    parser.add_argument(
        "--shares", type=float, nargs="+", default=[0.5, 0.3], help=f"FILL_MIN_SHARE values (the tools': {detect.FILL_MIN_SHARE})"
    )
    parser.add_argument("--detectors", nargs="+", default=["blazeface", "haar"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processed", default="data/processed")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    data = arrays_mod.load(Path(args.processed) / arrays_mod.ARRAY_FILE)
    pick = np.random.default_rng(args.seed).choice(len(data.y["val"]), min(args.faces, len(data.y["val"])), replace=False)
    faces, labels = data.x["val"][pick], [EMOTIONS[y] for y in data.y["val"][pick]]
    scenes = {ratio: [portrait(f, args.side, ratio) for f in faces] for ratio in args.ratios}
    photos = no_face_images()
    empty = photos | no_face_crops(photos, args.side, 20, args.seed)
    base = EmotionRecognizer.load(args.model)
    settings = [(pad, share) for pad in args.pads for share in (args.shares if pad else args.shares[:1])]
    results = []
    for detector in args.detectors:
        for pad, share in settings:
            detect.FILL_MIN_SHARE = share  # detect_filling reads it at each call
            recognizer = EmotionRecognizer(base.classifier, detector, base.contract, base.max_pixels, base.tta, fill_pad=pad)
            by_ratio = {}
            for ratio, images in scenes.items():
                answers = [recognizer.predict(image) for image in images]
                found = sum(bool(a) for a in answers)
                right = sum(a[0].emotion == label for a, label in zip(answers, labels) if a)
                by_ratio[str(ratio)] = {"found": found, "named_right": right, "accuracy_on_found": round(right / max(found, 1), 4)}
            boxes = {name: len(recognizer.predict(image)) for name, image in empty.items()}
            results.append(
                {
                    "detector": detector,
                    "fill_pad": pad,
                    "min_share": share if pad else None,
                    "by_ratio": by_ratio,
                    "boxes_in_images_without_a_face": sum(boxes.values()),
                    "boxes_by_image": {k: v for k, v in boxes.items() if v},
                }
            )
            cells = ", ".join(f"{r}: {v['found']} found, {v['named_right']} right" for r, v in by_ratio.items())
            print(
                f"{detector:9s} fill_pad {pad:4.2f} min share {share if pad else '-'}: {cells}; "
                f"boxes in {len(empty)} images without a face: {sum(boxes.values())}",
                flush=True,
            )
    write_json(
        args.out,
        {
            "split": "PublicTest",
            "faces": len(faces),
            "side": args.side,
            "seed": args.seed,
            "tta": base.tta,
            "images_without_a_face": len(empty),
            "results": results,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
