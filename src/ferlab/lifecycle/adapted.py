"""What `ferlab adapt` hands on: the adapted model's bundle (the same layout as the package stage's, with
its own emotions, report and figures) and, with --log, an MLflow run and a registered version.

The bundle (`write_bundle`): model.h5 (temperature fitted on the user's validation part, in the weights),
model.tflite (float16), labels.json (the model's emotions, in output order), preprocessing.json (the
parent's crop contract), MODEL_CARD.md, adapt.json (every figure), confusion_before_after.png,
recall_before_after.png, split.csv (each image's path, label, group and side; no pixels) and held_out.csv.

The registered version (`log_and_register`) is tagged with its parent, the user set's digest and size and
the before/after figures (TAGS); the run has the user set as its dataset input (paths and labels, never
the images) and the report and figures as artifacts. Registration cannot be left half done: Ctrl+C waits
for it (ferlab.lifecycle.registry.register), and a failure removes what was created.
"""

import csv
import json
from pathlib import Path

from ferlab.fileio import atomic_path, write_json

EXPERIMENT = "ferlab-adaptations"
REPORT = "adapt.json"
FIGURES = ("confusion_before_after.png", "recall_before_after.png")
SPLIT_TABLE = "split.csv"
HELD_OUT_TABLE = "held_out.csv"  # path,label of the validation part: `ferlab evaluate held_out.csv --model <bundle>`
# registry tags of an adapted version (the gate of `ferlab models promote` reads the adapt.* ones)
PARENT_VERSION = "adapt.parent_version"
VAL_ACCURACY_BEFORE, VAL_ACCURACY_AFTER = "adapt.val_accuracy_before", "adapt.val_accuracy_after"
VAL_MACRO_F1_BEFORE, VAL_MACRO_F1_AFTER = "adapt.val_macro_f1_before", "adapt.val_macro_f1_after"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _ci(interval) -> str:
    return f"[{_pct(interval[0])}, {_pct(interval[1])}]"


def figures_line(scored: dict, what: str) -> str:
    """ "accuracy 61.20% [57.6%, 64.8%] -> 66.90% [...] (+5.70 points [...]), macro-F1 ..." of a compare() dict."""
    b, a, g = scored["before"], scored["after"], scored["gain"]
    return (
        f"{what} ({scored['faces']:,} faces): accuracy {_pct(b['accuracy'])} {_ci(b['accuracy_ci'])} -> "
        f"{_pct(a['accuracy'])} {_ci(a['accuracy_ci'])} ({100 * g['accuracy']:+.2f} points, 95% interval "
        f"{100 * g['accuracy_ci'][0]:+.2f} to {100 * g['accuracy_ci'][1]:+.2f}); macro-F1 {b['macro_f1']:.4f} -> {a['macro_f1']:.4f}"
    )


def card(report: dict) -> str:
    """MODEL_CARD.md of an adapted model."""
    data, parent, val = report["dataset"], report["parent"], report["validation"]
    test = report.get("privatetest") or {}
    rows = ["| emotion | recall before | recall after | faces |", "|---|---:|---:|---:|"]
    for e in report["emotions"]:
        b, a = val["before"]["per_class"][e], val["after"]["per_class"][e]
        rows.append(f"| {e} | {b['recall']:.3f} | {a['recall']:.3f} | {a['support']} |")
    recipe = report["recipe"]
    return f"""# Model card: {parent["label"]} adapted to {data["name"]}

## Model
- Fine-tuned by `ferlab adapt` from `{parent["label"]}` on {data["faces"]["train"]:,} faces of `{data["source"]}`
  (set digest `{data["sha256"][:16]}`), validated on {data["faces"]["val"]:,} ({data["split"]}).
- Emotions (outputs, in order): {", ".join(report["emotions"])}.
- Recipe: batch normalisation `{recipe["batch_norm"]}`, layers `{recipe["layers"]}` trained, {report["epochs"]} epochs,
  AdamW at {recipe["learning_rate"]:g} (cosine decay), batch {recipe["batch_size"]}, class weights `{recipe["class_weights"]}`,
  augmentation as adapt.json states; {report["train_seconds"] / 60:.1f} minutes of training.
- Temperature {report["temperature"]:.3f}, fitted on the validation part (in the weights of every format).
- Input: as the parent's (`preprocessing.json`): one 48x48 grey face, grey levels / 255.

## On the user's validation part (flip test-time augmentation)
{figures_line(val, "validation part")}.

{chr(10).join(rows)}

## On FER2013 PrivateTest (faces in general)
{figures_line(test, "PrivateTest") + "." if test.get("before") else "Not scored: " + test.get("skipped", "FER2013 was not found") + "."}

The validation part chose nothing but the temperature (which moves no answer): no epoch or setting was
selected on it, so its figures are not biased upwards by a selection.
"""


def write_split_table(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """split.csv (path, label, group, part) and, beside it, held_out.csv: the validation part as
    `ferlab evaluate` reads a CSV (absolute paths)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "group", "part"])
        writer.writerows(rows)
    with open(path.with_name(HELD_OUT_TABLE), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows((str(Path(p).resolve()), label) for p, label, _, part in rows if part == "val")


def write_bundle(
    out: str | Path, model, report: dict, preprocessing: dict, split_rows: list[tuple[str, str, str, str]], tflite_check
) -> Path:
    """The bundle folder `out`, written whole or not at all (atomic_path): an interrupted adapt
    leaves the folder as it was. tflite_check(path) -> the TFLite model's accuracy on the validation part."""
    from ferlab import plots
    from ferlab.lifecycle.export import to_tflite
    from ferlab.training.model_io import save_h5

    emotions = tuple(report["emotions"])
    val = report["validation"]
    with atomic_path(out) as folder:
        folder.mkdir()
        save_h5(model, folder / "model.h5")
        to_tflite(model, folder / "model.tflite", "float16")
        report["tflite"] = {"quantization": "float16", "val_accuracy": round(float(tflite_check(folder / "model.tflite")), 4)}
        write_json(folder / "labels.json", {"emotions": [{"id": i, "name": e} for i, e in enumerate(emotions)]})
        write_json(folder / "preprocessing.json", preprocessing)
        write_split_table(folder / SPLIT_TABLE, split_rows)
        plots.confusion_pair(
            val["before"]["confusion_matrix"],
            val["after"]["confusion_matrix"],
            folder / FIGURES[0],
            (f"before: accuracy {val['before']['accuracy']:.3f}", f"after: accuracy {val['after']['accuracy']:.3f}"),
            emotions,
            f"{report['dataset']['name']}, validation part ({val['faces']} faces)",
        )
        plots.recall_pair(
            {e: val["before"]["per_class"][e]["recall"] for e in emotions},
            {e: val["after"]["per_class"][e]["recall"] for e in emotions},
            folder / FIGURES[1],
            ("before", "after"),
            f"{report['dataset']['name']}, validation part: recall per emotion",
        )
        (folder / "MODEL_CARD.md").write_text(card(report))
        write_json(folder / REPORT, report)
    return Path(out)


def version_tags(report: dict) -> dict[str, str]:
    """The registered version's tags: its parent, the user set (digest, size), the before/after figures."""
    data, parent, val = report["dataset"], report["parent"], report["validation"]
    tags = {
        "source": f"adapt {data['name']} from {parent['label']}",
        "adapt.parent": parent["label"],
        "adapt.parent_sha256": parent["sha256"],
        "adapt.dataset": data["name"],
        "adapt.data_sha256": data["sha256"],
        "adapt.images": str(data["images"]),
        "adapt.train_faces": str(data["faces"]["train"]),
        "adapt.val_faces": str(data["faces"]["val"]),
        "adapt.split": data["split"],
        "adapt.emotions": ",".join(report["emotions"]),
        VAL_ACCURACY_BEFORE: f"{val['before']['accuracy']:.4f}",
        VAL_ACCURACY_AFTER: f"{val['after']['accuracy']:.4f}",
        "adapt.val_accuracy_after_ci": "{:.4f}-{:.4f}".format(*val["after"]["accuracy_ci"]),
        VAL_MACRO_F1_BEFORE: f"{val['before']['macro_f1']:.4f}",
        VAL_MACRO_F1_AFTER: f"{val['after']['macro_f1']:.4f}",
        "temperature": f"{report['temperature']:.4f}",
        "tflite_accuracy": f"{report['tflite']['val_accuracy']:.4f}",
    }
    if parent.get("version"):
        tags[PARENT_VERSION] = str(parent["version"])
    test = report.get("privatetest") or {}
    if test.get("before"):
        tags["adapt.privatetest_accuracy_before"] = f"{test['before']['accuracy']:.4f}"
        tags["adapt.privatetest_accuracy_after"] = f"{test['after']['accuracy']:.4f}"
        if test.get("emotions") == "all":  # the figures every version is compared on, where they mean the same
            tags["test_accuracy"] = f"{test['after']['accuracy']:.4f}"
            tags["test_macro_f1"] = f"{test['after']['macro_f1']:.4f}"
    return tags


def log_and_register(bundle: Path, report: dict, name: str) -> tuple[str, object]:
    """An MLflow run of the experiment `ferlab-adaptations` (the user set as its dataset input, the
    recipe as params, the figures as metrics, report and figures as artifacts, the model) and a new
    version of `name` (alias candidate) tagged by version_tags. (run id, registry.VersionInfo)."""
    import mlflow
    import pandas as pd

    from ferlab.config import as_flat_dict
    from ferlab.lifecycle import pyfunc, registry, tracking

    data, val = report["dataset"], report["validation"]
    tracker = tracking.RunTracker(EXPERIMENT, tags={"ferlab.parent": report["parent"]["label"], "ferlab.dataset": data["name"]})
    run_id = tracker.start()
    try:
        table = pd.read_csv(bundle / SPLIT_TABLE, dtype=str, keep_default_na=False)
        dataset = mlflow.data.from_pandas(table, source=str(Path(data["source"]).resolve()), name=data["name"], digest=data["sha256"][:32])
        tracker.log_dataset(dataset, "adapt")
        tracker.log_params(
            as_flat_dict({"recipe": report["recipe"]})
            | {"parent": report["parent"]["label"], "emotions": ",".join(report["emotions"]), "epochs": report["epochs"]}
            | {"dataset": data["source"], "val_dataset": data.get("val_source") or "", "split": data["split"]}
        )
        metrics = {f"val_{k}_{side}": val[side][k] for side in ("before", "after") for k in ("accuracy", "macro_f1")}
        metrics |= {"temperature": report["temperature"], "train_seconds": report["train_seconds"]}
        for e in report["emotions"]:
            metrics |= {f"val_recall_{e}_{side}": val[side]["per_class"][e]["recall"] for side in ("before", "after")}
        test = report.get("privatetest") or {}
        if test.get("before"):
            metrics |= {f"privatetest_accuracy_{side}": test[side]["accuracy"] for side in ("before", "after")}
        tracker.log_metrics(metrics)
        for row in report["history"]:
            tracker.log_metrics({"loss": row["loss"], "accuracy": row["accuracy"]}, step=row["epoch"])
        for file in (REPORT, *FIGURES, "MODEL_CARD.md"):
            tracker.log_artifact(bundle / file, "adapt")
        files = {file: str(bundle / file) for file in ("model.tflite", "preprocessing.json", pyfunc.LABELS_ARTIFACT)}
        info = pyfunc.log_model("emotion_model", bundle / "model.h5", files)
        version = registry.register(name, info.model_uri, tags=version_tags(report), run_id=run_id)
    except BaseException:
        mlflow.end_run(status="KILLED")
        raise
    tracker.end()
    return run_id, version


def read_report(bundle: str | Path) -> dict:
    return json.loads((Path(bundle) / REPORT).read_text())
