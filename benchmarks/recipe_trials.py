"""The table of training trials, from the MLflow runs of the `ferlab` experiment.

Each `dvc repro` / `dvc exp run` is one MLflow run with its params and evaluate's metrics;
this prints them side by side: the params that differ between runs, the epochs, the PublicTest
accuracy that selected the epoch (or the average of the last epochs' weights), and PrivateTest
(one view, flip, ten-crop and scale-rotate TTA, macro-F1, the lowest per-class recall).
Runs without evaluate's metrics (interrupted) are listed too.
The table is merged into the one already at --out: rows of runs that this database does not
hold (trials tracked on other machines, added there or by hand) stay where they are.

Run by hand from the project root:
    python benchmarks/recipe_trials.py [--experiment ferlab] [--out reports/recipe_trials.md] [--replace]
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


RESULTS = ("epochs run (best)", "PublicTest", "PrivateTest", "flip", "ten-crop", "scale-rotate", "macro-F1", "lowest recall", "note")


def column(key: str) -> str:
    if key == "train.class_weights":  # preprocess.class_weights would take the same name
        return "weighted loss"
    return key.removeprefix("train.").removeprefix("preprocess.")


def epochs_cell(m: dict, epochs_run: int) -> str:
    """Epochs run and which the model keeps: the best epoch, or the average of the last N."""
    if m.get("averaged_epochs"):
        return f"{epochs_run} (average of the last {int(m['averaged_epochs'])})"
    return f"{epochs_run} ({int(m['best_epoch'])})" if "best_epoch" in m else str(epochs_run)


def run_row(run, params: list[str], epochs_run: int) -> dict[str, str]:
    """One table row (column name -> cell) for an MLflow run."""
    m, p = run.data.metrics, run.data.params
    recalls = {e: m[f"eval/test_recall_{e}"] for e in EMOTIONS if f"eval/test_recall_{e}" in m}
    lowest = min(recalls, key=recalls.get) if recalls else None
    row = {"run": run.info.run_name or run.info.run_id[:8]}
    # a run resumed with another value (train.epochs at a constant rate) went on with the tagged one
    row |= {column(k): run.data.tags.get(f"resumed_with.{k}", p.get(k, "tensorflow (dvc)" if k == "engine" else "")) for k in params}
    cells = (
        epochs_cell(m, epochs_run),
        pct(m.get("average_val_accuracy") if m.get("averaged_epochs") else m.get("best_val_accuracy")),
        pct(m.get("eval/test_accuracy")),
        pct(m.get("eval/test_tta_flip_accuracy")),
        pct(m.get("eval/test_tta_ten_crop_accuracy")),
        pct(m.get("eval/test_tta_scale_rotate_accuracy")),
        f"{m['eval/test_macro_f1']:.3f}" if "eval/test_macro_f1" in m else "",
        f"{lowest} {recalls[lowest]:.2f}" if lowest else "",
        run.data.tags.get("ferlab.note", "" if "eval/test_accuracy" in m else f"{run.info.status.lower()}, no evaluation"),
    )
    return row | dict(zip(RESULTS, cells))


def split_row(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().removeprefix("|").removesuffix("|").split("|")]


def read_table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a table this script wrote (columns named by the header)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    if len(lines) < 2:
        return [], []
    header = split_row(lines[0])
    return header, [dict(zip(header, split_row(line))) for line in lines[2:]]


def merge(old_text: str, new_rows: list[dict[str, str]], params: list[str]) -> str:
    """The table of `new_rows`, keeping the rows of `old_text` whose run is not among them (trials
    tracked on other machines) in their place; a run in both takes the new row's non-empty cells
    (a note written by hand stays). Columns: those of the old table, then the new params."""
    old_header, old_rows = read_table(old_text)
    by_run = {row["run"]: row for row in new_rows}
    rows = [row | {k: v for k, v in by_run.pop(row["run"], {}).items() if v} for row in old_rows]
    rows += list(by_run.values())
    old_params = [c for c in old_header if c not in ("run", *RESULTS)]
    header = ["run", *old_params, *(column(k) for k in params if column(k) not in old_params), *RESULTS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.get(c, "") for c in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="ferlab")
    parser.add_argument("--out", default="reports/recipe_trials.md")
    parser.add_argument("--replace", action="store_true", help="write this database's runs only (default: merge into --out)")
    args = parser.parse_args()

    import mlflow

    tracking.setup(args.experiment)
    runs = mlflow.search_runs(experiment_names=[args.experiment], order_by=["start_time ASC"], output_format="list")
    keys = {k for r in runs for k in r.data.params}
    # runs of the pipeline log no `engine` param (the GPU script logs it): their cell reads "tensorflow (dvc)"
    candidates = [k for k in SHOWN if k in keys or k == "engine"] + sorted(k for k in keys if k.startswith("train.model_options."))
    varying = [k for k in candidates if len({r.data.params.get(k) for r in runs}) > 1]
    client = mlflow.MlflowClient()
    out = Path(args.out)
    old = "" if args.replace or not out.is_file() else out.read_text()
    shown = candidates if old else varying  # beside other machines' rows, a param constant here may not be
    rows = [run_row(r, shown, len(client.get_metric_history(r.info.run_id, "val_accuracy"))) for r in runs]
    table = merge(old, rows, shown)
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
