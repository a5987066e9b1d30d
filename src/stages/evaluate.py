"""DVC stage `evaluate`: models/model.h5 on Training, PublicTest, PrivateTest -> reports/ + the MLflow run."""

import csv
from pathlib import Path

import numpy as np

from ferlab import config, plots
from ferlab.contract import EMOTIONS
from ferlab.data import arrays as arrays_mod
from ferlab.fileio import atomic_path, read_json, write_json
from ferlab.lifecycle import tracking
from ferlab.stage import log, run
from ferlab.training import calibration, model_io
from ferlab.training.evaluate import predict_proba, predict_proba_scale_rotate, predict_proba_ten_crop, scores

SPLIT_NAMES = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def calibration_report(views: dict, y_val: np.ndarray, y_test: np.ndarray, fit: bool) -> dict:
    """The temperature fitted on PublicTest (flip views) and PrivateTest's calibration error before and after."""
    temperature = calibration.fit_temperature(views["val"], y_val) if fit else 1.0
    ece = {
        mode: {
            "before": calibration.expected_calibration_error(calibration.tempered(v, 1.0), y_test),
            "after": calibration.expected_calibration_error(calibration.tempered(v, temperature), y_test),
        }
        for mode, v in (("flip", views["test"]), ("none", views["test"][:1]))
    }
    return {
        "method": "temperature" if fit else "none",
        "temperature": round(temperature, 4),
        "fitted_on": "PublicTest, the mean of each face and its mirror image (the tools' default)",
        "bins": calibration.ECE_BINS,
        "test_ece": {mode: {k: round(v, 4) for k, v in e.items()} for mode, e in ece.items()},
        "reliability": {
            "before": calibration.reliability(calibration.tempered(views["test"], 1.0), y_test),
            "after": calibration.reliability(calibration.tempered(views["test"], temperature), y_test),
        },
    }


def main() -> None:
    params = config.load()
    paths, cfg = params.paths, params.evaluate
    arrays = arrays_mod.load(Path(paths.processed) / arrays_mod.ARRAY_FILE)
    model = model_io.load_h5(paths.model)
    results, views = {}, {}
    for key in ("train", "val", "test"):
        x, y = arrays.x[key], arrays.y[key].astype(int)
        if key == "train":  # the oversampled copies would count twice
            _, first = np.unique(arrays.ids[key], return_index=True)
            x, y = x[np.sort(first)], y[np.sort(first)]
        probs = predict_proba(model, x, cfg.batch_size)
        results[key] = scores(y, probs.argmax(1))
        log(f"{SPLIT_NAMES[key]}: accuracy {results[key]['accuracy']:.4f}, macro-F1 {results[key]['macro_f1']:.4f}")
        if key == "train":
            continue
        # (2, N, 7): the face and its mirror image, the tools' default views
        views[key] = np.stack([probs, predict_proba(model, x[:, :, ::-1], cfg.batch_size)])
        # Each TTA on PublicTest too: that is where a user chooses one; PrivateTest reports it.
        tta = {
            "flip": (cfg.tta_flip, lambda: views[key].mean(0)),
            "ten_crop": (cfg.tta_ten_crop, lambda: predict_proba_ten_crop(model, x, cfg.batch_size)),
            "scale_rotate": (cfg.tta_scale_rotate, lambda: predict_proba_scale_rotate(model, x, cfg.batch_size)),
        }
        for mode, (wanted, predict) in tta.items():
            if wanted:
                results[f"{key}_tta_{mode}"] = scores(y, predict().argmax(1))
                accuracy = results[f"{key}_tta_{mode}"]["accuracy"]
                log(f"{SPLIT_NAMES[key]} with {mode.replace('_', '-')} TTA: accuracy {accuracy:.4f}")
    test_probs = views["test"][0]
    calibrated = calibration_report(views, arrays.y["val"].astype(int), arrays.y["test"].astype(int), cfg.calibrate)
    log(
        f"PrivateTest expected calibration error (flip TTA): {calibrated['test_ece']['flip']['before']:.4f}"
        + (
            f", {calibrated['test_ece']['flip']['after']:.4f} at temperature {calibrated['temperature']:.3f}"
            if cfg.calibrate
            else " (calibration off)"
        )
    )

    test = results["test"]
    metrics = {name: {k: round(results[name][k], 4) for k in ("accuracy", "macro_f1", "weighted_f1")} for name in results}
    metrics["test"]["per_class_f1"] = {e: round(test["per_class"][e]["f1-score"], 4) for e in EMOTIONS}
    metrics["test"]["per_class_recall"] = {e: round(test["per_class"][e]["recall"], 4) for e in EMOTIONS}
    metrics["calibration"] = {
        "temperature": calibrated["temperature"],
        "ece_before": calibrated["test_ece"]["flip"]["before"],
        "ece_after": calibrated["test_ece"]["flip"]["after"],
    }
    write_json(paths.metrics, metrics)

    y_test = arrays.y["test"].astype(int)
    y_pred = test_probs.argmax(1)
    with atomic_path(paths.evaluate_report) as staged:
        staged.mkdir()
        write_json(staged / "calibration.json", calibrated)
        calibration.plot_reliability(
            calibrated["reliability"]["before"],
            calibrated["reliability"]["after"],
            staged / "reliability.png",
            f"PrivateTest, flip TTA, temperature {calibrated['temperature']:.3f}",
        )
        write_json(staged / "scores.json", {k: {m: v for m, v in r.items() if m != "report_text"} for k, r in results.items()})
        (staged / "classification_report.txt").write_text(
            "".join(f"== {SPLIT_NAMES.get(k, k)} ==\n{r['report_text']}\n" for k, r in results.items())
        )
        with open(staged / "test_predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "actual", "predicted", *[f"p_{e}" for e in EMOTIONS]])
            for i, (t, p) in enumerate(zip(y_test, y_pred)):
                writer.writerow([arrays.ids["test"][i], EMOTIONS[t], EMOTIONS[p], *np.round(test_probs[i], 4)])
        plots.confusion(test["confusion_matrix"], staged / "confusion_matrix.png", f"PrivateTest (accuracy {test['accuracy']:.3f})")
        plots.per_class_f1(test["per_class"], staged / "per_class_f1.png", f"PrivateTest F1 (macro {test['macro_f1']:.3f})")
        picks = np.random.default_rng(params.seed).choice(len(y_test), min(cfg.example_faces, len(y_test)), replace=False)
        plots.labelled_faces(
            [arrays.x["test"][i] for i in picks],
            [EMOTIONS[y_test[i]] for i in picks],
            [EMOTIONS[y_pred[i]] for i in picks],
            staged / "test_examples.png",
        )

    run_file = Path(paths.train_report) / "run.json"
    run_info = read_json(run_file)
    tracker = tracking.RunTracker(params.train.experiment)
    tracker.start(run_info["run_id"])
    # "eval/" keeps these apart from the per-epoch training metrics (val_accuracy, ...)
    flat = {f"eval/{split}_{k}": v for split, m in metrics.items() for k, v in m.items() if not isinstance(v, dict)}
    flat |= {f"eval/test_f1_{e}": v for e, v in metrics["test"]["per_class_f1"].items()}
    flat |= {f"eval/test_recall_{e}": v for e, v in metrics["test"]["per_class_recall"].items()}
    tracker.log_metrics(flat)
    for name in (
        "classification_report.txt",
        "confusion_matrix.png",
        "per_class_f1.png",
        "test_examples.png",
        "scores.json",
        "calibration.json",
        "reliability.png",
    ):
        tracker.log_artifact(Path(paths.evaluate_report) / name, "evaluate")
    tracker.end()
    log(f"wrote {paths.metrics}; logged to MLflow run {run_info['run_id']}")


if __name__ == "__main__":
    run(main)
