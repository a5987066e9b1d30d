"""`ferlab explain`: heat maps of what each face's emotion rests on."""

import argparse
import json
import sys
from pathlib import Path

from ferlab.cli.common import error, input_files, load_recognizer, unique_name
from ferlab.errors import FerlabError


def _print_explained(results: list[dict]) -> None:
    rows = [("file", "face", "x", "y", "w", "h", "emotion", "prob", "method", "heatmap")]
    for result in results:
        if "error" in result:
            continue
        if not result["faces"]:
            rows.append((result["path"], "-", "", "", "", "", "no face", "", "", ""))
        for i, face in enumerate(result["faces"]):
            box = face["box"]
            rows.append(
                (
                    result["path"],
                    str(i),
                    *(str(box[k]) for k in "xywh"),
                    face["emotion"],
                    f"{face['probabilities'][face['emotion']]:.2f}",
                    face["method"],
                    face["heatmap"],
                )
            )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def cmd_explain(args) -> int:
    import cv2
    from tqdm import tqdm

    from ferlab.inference.explain import choose_method

    files, unmatched = input_files(args.paths)
    recognizer = load_recognizer(args)
    choose_method(args.method, recognizer.classifier)  # an impossible method fails before any image is read
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    results: list[dict] = []
    failed = unmatched
    bar = tqdm(total=len(files), unit="image", disable=len(files) < 2 or args.quiet or None, file=sys.stderr)
    for path in files:
        try:
            explained = recognizer.explain(path, face_crop=args.face_crop, method=args.method)
        except FerlabError as err:
            failed += 1
            bar.clear()
            error(str(err))
            results.append({"path": path, "error": str(err)})
            bar.update(1)
            continue
        stem = unique_name(Path(path).stem, "", used)
        faces = []
        for i, explanation in enumerate(explained):
            target = out_dir / f"{stem}.face{i}.{explanation.method}.png"
            if not cv2.imwrite(str(target), explanation.overlay()):
                raise FerlabError(f"cannot write {target}; check that {out_dir} is writable.")
            faces.append({**explanation.to_dict(), "heatmap": str(target)})
        results.append({"path": path, "faces": faces})
        bar.update(1)
    bar.close()
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        _print_explained(results)
    if failed:
        error(f"{failed} of {len(files) + unmatched} inputs failed; the others were processed.")
    return 1 if failed else 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    from ferlab.inference.explain import METHODS

    explain = sub.add_parser(
        "explain",
        parents=[common],
        help="heat maps of what each face's emotion rests on",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="For each face in the images, write the face with a heat map over the regions that moved\n"
        "its top emotion (red: most) to --out as <image>.face<N>.<method>.png, N counting from the\n"
        "largest face, and print one line per face. Unreadable inputs are reported and skipped.",
        epilog="methods:\n"
        "  occlusion  hide the face patch by patch (8x8 pixels of the 48x48 input) and measure how much\n"
        "             the top emotion's probability drops; works on every runtime\n"
        "  gradcam    Grad-CAM: the last convolutional feature map weighted by the gradient of the\n"
        "             top emotion; needs the Keras model (--runtime keras)\n"
        "  auto       gradcam when the model runs on Keras, else occlusion\n"
        "examples:\n"
        "  ferlab explain photo.jpg --out heatmaps/\n"
        "  ferlab explain photos/ --method occlusion --json > why.json\n"
        "  ferlab explain photo.jpg --runtime keras --method gradcam",
    )
    explain.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    explain.add_argument("--out", default="heatmaps", metavar="DIR", help="where the face images go (default: %(default)s)")
    explain.add_argument("--method", choices=METHODS, default="auto", help="how the heat map is made (default: %(default)s)")
    explain.add_argument(
        "--json", action="store_true", help="print JSON: [{path, faces: [{box, confidence, emotion, probabilities, method, heatmap}]}]"
    )
    explain.add_argument(
        "--face-crop", action="store_true", help="the images already are face crops (FER2013-style): explain them whole, no detection"
    )
    explain.set_defaults(func=cmd_explain)
