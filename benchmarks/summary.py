"""The benchmark figures in one Markdown page: reports/benchmarks/summary.md, from the JSON
files that the other scripts in benchmarks/ wrote (a missing one is listed as not run).

    python benchmarks/summary.py
"""

import json
from pathlib import Path

REPORTS = Path("reports/benchmarks")


def load(name: str) -> dict | None:
    path = REPORTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def target(ok: bool) -> str:
    return "met" if ok else "**missed**"


def accuracy_section(data: dict) -> list[str]:
    lines = ["## Accuracy on PrivateTest (`benchmarks/accuracy.py`)", "", (REPORTS / "accuracy.md").read_text().strip(), ""]
    return lines


def vs_fer_models_section(vs_fer: dict, source: str) -> list[str]:
    """`vs_fer.py --models ...`: several models, each with the tools' defaults, against fer."""
    theirs = vs_fer["fer"]
    lines = [
        f"## Against fer, the shipped models (`benchmarks/vs_fer.py --models`, `{source}`)",
        "",
        f"{vs_fer['frames']} PrivateTest faces enlarged into 640x480 frames, the same frames for each tool, alternating; "
        f"ferlab with {vs_fer['ferlab_detector']} and {vs_fer['ferlab_tta']} TTA (CPU: {vs_fer['cpu']}):",
        "",
        "| tool | median ms per frame (p25-p75) | face recall | boxes off the face | accuracy on found faces | faster than fer |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = [(f"`{name}` ({s['runtime']})", s) for name, s in vs_fer["ferlab"].items()] + [("fer `FER(mtcnn=False)`", theirs)]
    for label, s in rows:
        faster = f"{s['speedup_median']}x" if "speedup_median" in s else ""
        lines.append(
            f"| {label} | {s['median_ms']} ({s['p25_ms']}-{s['p75_ms']}) | {s['face_recall']:.3f} | "
            f"{s['boxes_off_the_face']} | {s['accuracy_on_found']:.3f} | {faster} |"
        )
    return lines + [""]


def vs_fer_section(vs_fer: dict, source: str) -> list[str]:
    if "speedup_median_ferlab" not in vs_fer:
        return vs_fer_models_section(vs_fer, source)
    ours, theirs = vs_fer["ferlab"], vs_fer["fer"]
    ratio = vs_fer["speedup_median_ferlab"]
    lines = [
        f"## Against fer (`benchmarks/vs_fer.py`, `{source}`)",
        "",
        f"{vs_fer['frames']} PrivateTest faces enlarged into 640x480 frames, the same frames for each tool, alternating "
        f"(CPU: {vs_fer.get('cpu', 'not recorded')}; model: {vs_fer.get('model', 'not recorded')}):",
        "",
        "| tool | median ms per frame (p25-p75) | face recall | boxes off the face | accuracy on found faces |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (
        ("ferlab", f"ferlab ({vs_fer['ferlab_detector']}, {vs_fer['classifier_runtime']})"),
        ("ferlab_haar", "ferlab (haar)"),
        ("ferlab_no_tta", "ferlab (no flip TTA)"),
        ("ferlab_ten_crop", "ferlab (ten-crop TTA)"),
        ("ferlab_scale_rotate", "ferlab (scale-rotate TTA)"),
        ("fer", "fer `FER(mtcnn=False)`"),
    ):
        if name not in vs_fer:  # runs before the TTA option have no such row
            continue
        s = vs_fer[name]
        lines.append(
            f"| {label} | {s['median_ms']} ({s['p25_ms']}-{s['p75_ms']}) | {s['face_recall']:.3f} | "
            f"{s['boxes_off_the_face']} | {s['accuracy_on_found']:.3f} |"
        )
    return lines + [
        "",
        f"Target: 3x faster than fer at equal or better recall: {ratio}x at recall "
        f"{ours['face_recall']:.3f} against {theirs['face_recall']:.3f}: "
        f"{target(ratio >= 3 and ours['face_recall'] >= theirs['face_recall'])}.",
        "",
    ]


def inference_section(inference: dict, source: str = "inference.json") -> list[str]:
    lines = [f"## Inference (`benchmarks/inference.py`, `{source}`)", "", f"Model: {inference.get('model', 'not recorded')}.", ""]
    tp = inference["classifier_throughput"]
    lines += [
        "Classifier throughput, faces per second (random 48x48 faces):",
        "",
        "| runtime | " + " | ".join(f"batch {b}" for b in next(iter(tp.values()))) + " |",
        "|---|" + "---:|" * len(next(iter(tp.values()))),
    ]
    for runtime, table in tp.items():
        lines.append(f"| {runtime} | " + " | ".join(f"{v['faces_per_s']:,}" for v in table.values()) + " |")
    best = max(v["faces_per_s"] for table in tp.values() for v in table.values())
    columns = next(v for v in inference["frame_640x480"].values() if "error" not in v)
    lines += [
        "",
        f"Target: 5,000 faces/s: best {best:,}: {target(best >= 5000)}.",
        "",
        "Latency per 640x480 frame as faces are added (end to end: detection, crops, one classifier call):",
        "",
        "| detector | " + " | ".join(k.replace("_", " ") for k in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, rows in inference["frame_640x480"].items():
        if "error" in rows:
            continue
        cells = (f"{r['end_to_end']['median_ms']} ms ({r['found']} found)" for r in rows.values())
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cold = inference["cold_start"]
    keras = f"; {cold['keras_haar']['median_s']} s with `--runtime keras --detector haar`" if "keras_haar" in cold else ""
    fresh = cold.get("no_model_named_empty_folder")
    fresh = f"; {fresh['median_s']} s with no `--model` in an empty folder (the shipped model)" if fresh else ""
    lines += [
        "",
        f"Cold start of `ferlab detect` on one photo (process start to printed JSON): {cold['default']['median_s']} s "
        f"with the model on LiteRT and blazeface{keras}{fresh}. "
        f"Target under 3 s: {target(cold['default']['median_s'] < 3)}.",
        "",
    ]
    return lines


def training_section(throughput: dict | None, runs: list[dict]) -> list[str]:
    lines = ["## Training (`benchmarks/train_throughput.py`, `benchmarks/time_to_accuracy.py`)", ""]
    if throughput:
        bf16 = throughput["machine"]["native_bf16"]
        lines += [
            f"Images per second, batch {throughput['batch']} (native bf16 on this CPU: {bf16}):",
            "",
            "| model | policy | images/s | s per FER2013 epoch |",
            "|---|---|---:|---:|",
        ]
        for r in throughput["results"]:
            lines.append(f"| {r['model']} | {r['policy']} | {r['images_per_s_median']} | {r['seconds_per_fer2013_epoch']} |")
        lines.append("")
    for tta in runs:
        best = tta["best"]
        kernels = tta.get("onednn_max_cpu_isa", "not recorded")
        recipe = " ".join(["params.yaml of its commit"] + [f"-S {o}" for o in tta.get("overrides", [])])
        lines.append(f"CPU: {tta.get('cpu', 'not recorded')}, oneDNN kernels: {kernels}, {tta['precision']}; {recipe}.")
        lines.append("")
        if tta["reached"]:
            lines.append(
                f"Time to the paper's {tta['target_accuracy']:.2%} on PrivateTest from a cold start: "
                f"{tta['minutes_to_target']} min (epoch {tta['epoch_at_target']}). "
                f"Target 30 min: {target(tta['minutes_to_target'] <= 30)}."
            )
        else:
            lines.append(
                f"Time to the paper's {tta['target_accuracy']:.2%} on PrivateTest from a cold start: not reached within "
                f"{tta['epochs'][-1]['train_seconds'] / 60:.1f} min of training (budget {tta['budget_minutes']} min); best "
                f"{best['private_test_accuracy']:.2%} at epoch {best['epoch']} ({best['train_seconds'] / 60:.1f} min). "
                f"Target 30 min: **missed**."
            )
        lines += ["", "| epoch | minutes of training | PrivateTest | PublicTest |", "|---:|---:|---:|---:|"]
        lines += [
            f"| {e['epoch']} | {e['train_seconds'] / 60:.1f} | {e['private_test_accuracy']:.4f} | {e['public_test_accuracy']:.4f} |"
            for e in tta["epochs"]
        ]
        lines.append("")
    return lines


def corrupted_section(data: dict, source: str) -> list[str]:
    names = list(data["models"])
    lines = [
        f"## Degraded faces (`benchmarks/corrupted_accuracy.py`, `{source}`)",
        "",
        f"{data['split']}, {data['faces']:,} faces, each degradation applied to all of them; {data['tta']}.",
        "",
        "| condition | " + " | ".join(Path(n).name for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for condition in data["models"][names[0]]["accuracy"]:
        lines.append(f"| {condition} | " + " | ".join(f"{data['models'][n]['accuracy'][condition]:.2%}" for n in names) + " |")
    lines.append("| mean of the degraded | " + " | ".join(f"**{data['models'][n]['mean_degraded']:.2%}**" for n in names) + " |")
    return lines + [""]


def framed_runs(data: dict) -> list[tuple[str, dict]]:
    """A framed_accuracy.py report, or several of them under named keys (one per TTA), with the key."""
    if "results" in data:
        return [("", data)]
    return [(f" ({key})", v) for key, v in data.items() if isinstance(v, dict) and "results" in v]


def framed_section(data: dict, source: str) -> list[str]:
    lines = [
        f"## Faces framed as photos (`benchmarks/framed_accuracy.py`, `{source}`)",
        "",
        "| model | levelled | TTA | framed: recall | framed: accuracy on found | upright: recall | upright: accuracy on found |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for key, run in framed_runs(data):
        for model, r in run["results"].items():
            framed, upright = r["framed"], r["upright"]
            lines.append(
                f"| {model}{key} | {'yes' if r['align'] else 'no'} | {r.get('tta', 'not recorded')} | {framed['recall']:.3f} | "
                f"{framed['accuracy_on_found']:.2%} | {upright['recall']:.3f} | {upright['accuracy_on_found']:.2%} |"
            )
    first = framed_runs(data)[0][1]
    faces = next(iter(first["results"].values()))["framed"]["faces"]
    note = f" {data['note']}." if "note" in data else ""
    return lines + ["", f"{first['split']}, {faces:,} faces, turned by up to {first['max_angle']:g} degrees when framed.{note}", ""]


def filled_section(data: dict, source: str) -> list[str]:
    ratios = list(data["results"][0]["by_ratio"])
    lines = [
        f"## Faces that fill the image (`benchmarks/filled_faces.py`, `{source}`)",
        "",
        f"{data['faces']} {data['split']} faces enlarged to a share of a {data['side']}x{data['side']} px grey image "
        f"(1: the whole image); found / named right; TTA {data['tta']}.",
        "",
        "| detector | fill_pad | min share | " + " | ".join(f"face {r} of the side" for r in ratios) + " | "
        f"boxes in {data['images_without_a_face']} images without a face |",
        "|---|---:|---:|" + "---:|" * (len(ratios) + 1),
    ]
    for r in data["results"]:
        cells = " | ".join(f"{v['found']} / {v['named_right']}" for v in r["by_ratio"].values())
        share = "" if r["min_share"] is None else f"{r['min_share']:g}"
        lines.append(f"| {r['detector']} | {r['fill_pad']:g} | {share} | {cells} | {r['boxes_in_images_without_a_face']} |")
    return lines + [""]


def service_section(runs: dict[str, dict]) -> list[str]:
    lines = [
        "## Service (`benchmarks/serve_load.py`)",
        "",
        "| server | concurrency | requests | errors | req/s | p50 ms | p99 ms | /healthz max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, data in runs.items():
        model = data["server"]["model"]
        for r in data["runs"]:
            lines.append(
                f"| {label} ({model['runtime']}, {model['detector']}) | {r['concurrency']} | {r['requests']} | {r['errors']} | "
                f"{r['throughput_rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['healthz']['max_ms']} |"
            )
    return lines + [""]


def main() -> None:
    lines = [
        "# Benchmark figures",
        "",
        "Generated by `python benchmarks/summary.py` from the JSON files next to this page; "
        "each script's docstring says how it measures. The figures come from several machines (2 CPU cores each, no GPU); "
        "a section names its CPU where the script recorded it, and figures of different CPUs do not compare.",
        "",
    ]
    missing = []
    if load("accuracy.json"):
        lines += accuracy_section(load("accuracy.json"))
    else:
        missing.append("accuracy.py")
    for path in sorted(REPORTS.glob("vs_fer*.json")):
        lines += vs_fer_section(load(path.name), path.name)
    for path in sorted(REPORTS.glob("inference*.json")):
        lines += inference_section(load(path.name), path.name)
    for path in sorted(REPORTS.glob("framed_accuracy*.json")):
        lines += framed_section(load(path.name), path.name)
    if load("filled_faces.json"):
        lines += filled_section(load("filled_faces.json"), "filled_faces.json")
    runs = [load(path.name) for path in sorted(REPORTS.glob("time_to_accuracy*.json"))]
    lines += training_section(load("train_throughput_precision.json"), runs)
    for path in sorted(REPORTS.glob("corrupted_accuracy*.json")):
        lines += corrupted_section(load(path.name), path.name)
    serve = {
        label: load(name)
        for label, name in (
            ("model.h5", "serve_load.json"),
            ("bundle", "serve_load_bundle.json"),
            ("model.h5, haar", "serve_load_haar.json"),
        )
        if load(name)
    }
    if serve:
        lines += service_section(serve)
    for name in (
        "vs_fer.json",
        "inference.json",
        "train_throughput_precision.json",
        "time_to_accuracy.json",
        "serve_load.json",
        "framed_accuracy.json",
        "filled_faces.json",
    ):
        if not load(name):
            missing.append(name)
    if missing:
        lines += ["Not run yet: " + ", ".join(missing), ""]
    out = REPORTS / "summary.md"
    out.write_text("\n".join(lines))
    print(out.read_text())


if __name__ == "__main__":
    main()
