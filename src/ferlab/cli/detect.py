"""`ferlab detect`: faces and emotions in images, folders and globs."""

import argparse
import csv
import json
import sys
from pathlib import Path

from ferlab.cli.common import IMAGE_SUFFIXES, error, input_files, load_recognizer, unique_name
from ferlab.errors import FerlabError


def _annotated_name(path: str, out_dir: Path, used: set[str]) -> Path:
    p = Path(path)
    return out_dir / unique_name(p.stem, p.suffix.lower() if p.suffix.lower() in IMAGE_SUFFIXES else ".png", used)


def _print_table(found: list[tuple[str, list]]) -> None:
    rows = [("file", "face", "x", "y", "w", "h", "emotion", "prob", "confidence")]
    for path, faces in found:
        if not faces:
            rows.append((path, "-", "", "", "", "", "no face", "", ""))
        for i, face in enumerate(faces):
            conf = "" if face.confidence is None else f"{face.confidence:.2f}"
            rows.append((path, str(i), *map(str, face.box), face.emotion, f"{face.probabilities[face.emotion]:.2f}", conf))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _print_csv(found: list[tuple[str, list]], model: str, emotions: tuple[str, ...]) -> None:
    from ferlab.inference.predict import Face

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["path", "face", *Face.row_fields(emotions), "model"])
    for path, faces in found:
        writer.writerows([path, i, *face.to_row(), model] for i, face in enumerate(faces))


def cmd_detect(args) -> int:
    import cv2
    from tqdm import tqdm

    from ferlab.inference.video import draw_faces

    files, unmatched = input_files(args.paths)
    recognizer = load_recognizer(args)
    if args.annotate:
        out_dir = Path(args.annotate)
        out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    results: list[dict] = []  # the JSON output, errors in place
    found_faces: list[tuple[str, list]] = []
    failed = unmatched
    bar = tqdm(total=len(files), unit="image", disable=len(files) < 2 or args.quiet or None, file=sys.stderr)
    for path, image, found in recognizer.predict_files(files, args.face_crop, on_read=lambda: bar.update(1)):
        if isinstance(found, FerlabError):
            failed += 1
            bar.clear()
            error(str(found))
            results.append({"path": path, "error": str(found)})
            continue
        results.append({"path": path, "model": recognizer.model_source, "faces": [face.to_dict() for face in found]})
        found_faces.append((path, found))
        if args.annotate:
            target = _annotated_name(path, out_dir, used)
            if not cv2.imwrite(str(target), draw_faces(image, found)):
                raise FerlabError(f"cannot write {target}; check that {out_dir} is writable.")
    bar.close()
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    elif args.csv:
        _print_csv(found_faces, recognizer.model_source, recognizer.emotions)
    else:
        _print_table(found_faces)
    if failed:
        error(f"{failed} of {len(files) + unmatched} inputs failed; the others were processed.")
    return 1 if failed else 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    detect = sub.add_parser(
        "detect",
        parents=[common],
        help="faces and emotions in images, folders and globs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Find the faces in images and classify their emotions.\n"
        "Unreadable inputs are reported and skipped; the exit status is 1 if any failed.",
        epilog="examples:\n"
        "  ferlab detect photo.jpg\n"
        "  ferlab detect photos/ --json > faces.json\n"
        '  ferlab detect "shots/*.png" --csv --annotate annotated/\n'
        "  ferlab detect fer_crops/ --face-crop",
    )
    detect.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    output = detect.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true", help="print JSON: [{path, model, faces: [{box, confidence, emotion, probabilities}]}]"
    )
    output.add_argument("--csv", action="store_true", help="print CSV, one row per face (the last column names the model)")
    detect.add_argument("--annotate", metavar="DIR", help="write copies of the images with boxes and labels to DIR")
    detect.add_argument(
        "--face-crop", action="store_true", help="the images already are face crops (FER2013-style): classify them whole, no detection"
    )
    detect.set_defaults(func=cmd_detect)
