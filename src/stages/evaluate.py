"""DVC stage `evaluate`: models/model.h5 on Training, PublicTest, PrivateTest -> reports/ + the MLflow run
(the scoring, calibration, metrics and figures: ferlab.training.evaluate)."""

from pathlib import Path

import numpy as np

from ferlab import config
from ferlab.data import arrays as arrays_mod
from ferlab.fileio import atomic_path, read_json, write_json
from ferlab.lifecycle import tracking
from ferlab.stage import log, run
from ferlab.training import model_io
from ferlab.training.evaluate import MODES, REPORT_FILES, evaluate, metrics_of, write_report


def main() -> None:
    params = config.load()
    paths, cfg = params.paths, params.evaluate
    arrays = arrays_mod.load(Path(paths.processed) / arrays_mod.ARRAY_FILE)
    model = model_io.load_h5(paths.model)
    splits = {}
    for key in ("train", "val", "test"):
        x, y = arrays.x[key], arrays.y[key].astype(int)
        if key == "train":  # the oversampled copies would count twice
            _, first = np.unique(arrays.ids[key], return_index=True)
            x, y = x[np.sort(first)], y[np.sort(first)]
        splits[key] = (x, y)
    # Each TTA on PublicTest too: that is where a user chooses one; PrivateTest reports it.
    wanted = {"flip": cfg.tta_flip, "ten_crop": cfg.tta_ten_crop, "scale_rotate": cfg.tta_scale_rotate}
    modes = tuple(m for m in MODES if wanted.get(m, True))
    result = evaluate(model, splits, modes, cfg.batch_size, cfg.calibrate, log=log)
    calibrated = result.calibration
    log(
        f"PrivateTest expected calibration error (flip TTA): {calibrated['test_ece']['flip']['before']:.4f}"
        + (
            f", {calibrated['test_ece']['flip']['after']:.4f} at temperature {calibrated['temperature']:.3f}"
            if cfg.calibrate
            else " (calibration off)"
        )
    )
    metrics = metrics_of(result)
    write_json(paths.metrics, metrics)
    with atomic_path(paths.evaluate_report) as staged:
        staged.mkdir()
        write_report(staged, result, arrays.x["test"], arrays.ids["test"], params.seed, cfg.example_faces)

    run_file = Path(paths.train_report) / "run.json"
    run_info = read_json(run_file)
    tracker = tracking.RunTracker(params.train.experiment)
    tracker.start(run_info["run_id"])
    # "eval/" keeps these apart from the per-epoch training metrics (val_accuracy, ...)
    flat = {f"eval/{split}_{k}": v for split, m in metrics.items() for k, v in m.items() if not isinstance(v, dict)}
    flat |= {f"eval/test_f1_{e}": v for e, v in metrics["test"]["per_class_f1"].items()}
    flat |= {f"eval/test_recall_{e}": v for e, v in metrics["test"]["per_class_recall"].items()}
    tracker.log_metrics(flat)
    for name in REPORT_FILES:
        tracker.log_artifact(Path(paths.evaluate_report) / name, "evaluate")
    tracker.end()
    log(f"wrote {paths.metrics}; logged to MLflow run {run_info['run_id']}")


if __name__ == "__main__":
    run(main)
