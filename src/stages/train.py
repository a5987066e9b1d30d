"""DVC stage `train`: data/processed/ -> models/model.h5 + reports/train/, one MLflow run.

With TF_CONFIG naming several workers, run it on every machine (see the README); the chief
writes all of this, the other workers train with it and write nothing."""

import csv
import os
import shutil
from pathlib import Path

from ferlab import config, plots
from ferlab.data import arrays as arrays_mod
from ferlab.errors import FerlabError
from ferlab.fileio import atomic_path, read_json, write_json
from ferlab.lifecycle import pyfunc, tracking
from ferlab.stage import log, run
from ferlab.training import cluster, engine, model_io
from ferlab.training.state import HISTORY_FIELDS
from ferlab.training.train import train


def main() -> None:
    params = config.load()
    engine.select(params.train.engine)  # chosen before Keras was imported (select_engine); checked here
    paths = params.paths
    me = cluster.role()
    if not me.chief and os.environ.get("DVC_ROOT"):
        raise FerlabError(f"{me.name} writes no stage outputs for DVC; start it with `python src/stages/train.py`, not DVC.")
    processed = Path(paths.processed)
    arrays = arrays_mod.load(processed / arrays_mod.ARRAY_FILE)
    meta = read_json(processed / arrays_mod.META_FILE)
    fetch_summary = read_json(paths.raw_summary)
    data_digest = fetch_summary["table_sha256"]
    if not me.chief:
        train(params, arrays, meta["class_weights"], data_digest, Path(paths.train_state), print_fn=log)
        log(f"{me.name} done; the chief writes the model and the MLflow run")
        return
    tracker = tracking.RunTracker(
        params.train.experiment,
        tags={
            "git_commit": tracking.git_commit(),
            "data_sha256": data_digest,
            "model": params.train.model,
            "dvc_exp": tracking.run_name() or "workspace",
            "hardware": tracking.hardware(),
        },
    )
    result = train(params, arrays, meta["class_weights"], data_digest, Path(paths.train_state), tracker, print_fn=log)

    model_io.save_h5(result.model, paths.model)
    with atomic_path(paths.train_report) as staged:
        staged.mkdir()
        (staged / "model_summary.txt").write_text(result.summary)
        with open(staged / "history.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows(result.history)
        plots.learning_curves(result.history, staged / "learning_curves.png")
        write_json(
            staged / "run.json",
            {
                "run_id": result.run_id,
                "tracking_uri": tracking.tracking_uri(),
                "experiment": params.train.experiment,
                "best_epoch": result.best_epoch,
                "best_val_accuracy": result.best_val_accuracy,
                "averaged_epochs": result.averaged_epochs,
                "average_val_accuracy": result.average_val_accuracy,
                "epochs_run": len(result.history),
                "precision": result.precision,
                "parameters": int(result.model.count_params()),
            },
        )
    report = Path(paths.train_report)
    tracker.log_metrics(
        {"best_val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch, "averaged_epochs": result.averaged_epochs}
    )
    tracker.log_dataset(tracking.fer2013_dataset(fetch_summary), context="training")
    for name in ("model_summary.txt", "history.csv", "learning_curves.png"):
        tracker.log_artifact(report / name, "train")
    tracker.log_artifact(paths.model, "model_h5")
    pyfunc.log_model("emotion_model", paths.model)  # the registered model's form and signature: faces 0..255 in
    tracker.end()
    shutil.rmtree(paths.train_state, ignore_errors=True)  # finished: nothing left to resume
    kept = (
        f"the average of the last {result.averaged_epochs} epochs, PublicTest accuracy {result.average_val_accuracy:.4f}"
        if result.averaged_epochs
        else f"best epoch {result.best_epoch}, PublicTest accuracy {result.best_val_accuracy:.4f}"
    )
    log(f"wrote {paths.model} ({kept}); MLflow run {result.run_id}")


def select_engine() -> None:
    """Keras' backend from params.yaml's train.engine, before stage.run imports Keras."""
    try:
        engine.select(config.load().train.engine)
    except FerlabError:
        pass  # main() reads params.yaml again and says what is wrong in one line


if __name__ == "__main__":
    select_engine()
    run(main)
