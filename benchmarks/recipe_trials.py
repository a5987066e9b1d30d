"""The table of training trials, from the MLflow runs of the `ferlab` experiment.

Each `dvc repro` / `dvc exp run` is one MLflow run with its params and evaluate's metrics;
this prints them side by side: the params that differ between runs, the epochs, the PublicTest
accuracy that selected the epoch, and PrivateTest (one view, flip and ten-crop TTA, macro-F1,
the lowest per-class recall). Runs without evaluate's metrics (interrupted) are listed too.

Run by hand from the project root:
    python benchmarks/recipe_trials.py [--experiment ferlab] [--out reports/recipe_trials.md]
"""

import argparse
from pathlib import Path

from ferlab.lifecycle import tracking

SHOWN = (
    "engine",
    "seed",
    "train.model",
    "train.model_options",
    "train.epochs",
    "train.batch_size",
    "train.optimizer",
    "train.learning_rate",
    "train.weight_decay",
    "train.label_smoothing",
    "train.class_weights",
    "preprocess.class_weights",
    "preprocess.augment.translate",
    "preprocess.augment.rotation_degrees",
    "preprocess.augment.zoom",
    "preprocess.augment.warp_probability",
    "preprocess.augment.low_resolution_probability",
    "train.resolved_precision",
    "model.parameters",
)
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def pct(value) -> str:
    return "" if value is None else f"{value * 100:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="ferlab")
    parser.add_argument("--out", default="reports/recipe_trials.md")
    args = parser.parse_args()

    import mlflow

    tracking.setup(args.experiment)
    runs = mlflow.search_runs(experiment_names=[args.experiment], order_by=["start_time ASC"], output_format="list")
    keys = {k for r in runs for k in r.data.params}
    candidates = [k for k in SHOWN if k in keys] + sorted(k for k in keys if k.startswith("train.model_options."))
    varying = [k for k in candidates if len({r.data.params.get(k) for r in runs}) > 1]
    header = [
        "run",
        *(k.removeprefix("train.").removeprefix("preprocess.") for k in varying),
        "epochs run (best)",
        "PublicTest",
        "PrivateTest",
        "flip",
        "ten-crop",
        "macro-F1",
        "lowest recall",
        "note",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        m, p = run.data.metrics, run.data.params
        recalls = {e: m[f"eval/test_recall_{e}"] for e in EMOTIONS if f"eval/test_recall_{e}" in m}
        lowest = min(recalls, key=recalls.get) if recalls else None
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_accuracy")
        cells = [
            run.info.run_name or run.info.run_id[:8],
            *(p.get(k, "tensorflow (dvc)" if k == "engine" else "") for k in varying),
            f"{len(history)} ({int(m['best_epoch'])})" if "best_epoch" in m else str(len(history)),
            pct(m.get("best_val_accuracy")),
            pct(m.get("eval/test_accuracy")),
            pct(m.get("eval/test_tta_flip_accuracy")),
            pct(m.get("eval/test_tta_ten_crop_accuracy")),
            f"{m['eval/test_macro_f1']:.3f}" if "eval/test_macro_f1" in m else "",
            f"{lowest} {recalls[lowest]:.2f}" if lowest else "",
            run.data.tags.get("ferlab.note", "" if "eval/test_accuracy" in m else f"{run.info.status.lower()}, no evaluation"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
