"""DVC stage `package`: the deployable bundle under models/bundle/ and a new registry version (alias `candidate`)."""

from pathlib import Path

import numpy as np

from ferlab import config, contract
from ferlab.contract import EMOTIONS
from ferlab.data import arrays as arrays_mod
from ferlab.errors import FerlabError
from ferlab.fileio import atomic_path, read_json, write_json
from ferlab.inference.classifier import TFLiteClassifier
from ferlab.lifecycle import model_card, pyfunc, registry, tracking
from ferlab.lifecycle.export import to_tflite
from ferlab.stage import log, run
from ferlab.training import calibration, model_io
from ferlab.training.evaluate import predict_proba


def main() -> None:
    params = config.load()
    paths, cfg = params.paths, params.package
    model = model_io.load_h5(paths.model)
    arrays = arrays_mod.load(Path(paths.processed) / arrays_mod.ARRAY_FILE)
    scores = read_json(Path(paths.evaluate_report) / "scores.json")
    run_info = read_json(Path(paths.train_report) / "run.json")
    fetch_summary = read_json(paths.raw_summary)
    validation = read_json(Path(paths.validation_report) / "report.json")
    calibrated = read_json(Path(paths.evaluate_report) / "calibration.json")
    if calibrated["method"] == "temperature":  # the bundle's probabilities are the calibrated ones
        model = calibration.with_temperature(model, calibrated["temperature"])
    x_test, y_test = arrays.x["test"], arrays.y["test"].astype(int)

    with atomic_path(paths.bundle) as bundle:
        bundle.mkdir()
        model_io.save_h5(model, bundle / "model.h5")
        h5_accuracy = float(np.mean(predict_proba(model, x_test).argmax(1) == y_test))
        to_tflite(model, bundle / "model.tflite", cfg.tflite)
        tflite = TFLiteClassifier(bundle / "model.tflite", batch_size=256)
        tflite_accuracy = float(np.mean(tflite(contract.normalize(x_test)).argmax(1) == y_test))
        drop = h5_accuracy - tflite_accuracy
        log(f"PrivateTest accuracy: .h5 {h5_accuracy:.4f}, TFLite ({cfg.tflite}) {tflite_accuracy:.4f}")
        if drop > cfg.max_tflite_drop:
            raise FerlabError(
                f"the TFLite export loses {drop * 100:.2f} points of PrivateTest accuracy "
                f"(limit {cfg.max_tflite_drop * 100:.2f}); try package.tflite=none or float16."
            )
        export = {
            "quantization": cfg.tflite,
            "h5_accuracy": round(h5_accuracy, 4),
            "tflite_accuracy": round(tflite_accuracy, 4),
            "tflite_bytes": (bundle / "model.tflite").stat().st_size,
            "h5_bytes": (bundle / "model.h5").stat().st_size,
        }
        write_json(bundle / "labels.json", {"emotions": [{"id": i, "name": e} for i, e in enumerate(EMOTIONS)]})
        write_json(bundle / "preprocessing.json", contract.preprocessing())
        write_json(bundle / "metrics.json", read_json(paths.metrics) | {"export": export})
        (bundle / "MODEL_CARD.md").write_text(
            model_card.render(
                cfg.registered_model,
                params.train.model,
                int(model.count_params()),
                scores,
                fetch_summary,
                validation,
                export,
                run_info,
                calibrated,
            )
        )

    if not cfg.register:
        log(f"wrote {paths.bundle}; registration is off (package.register: false)")
        return
    tracker = tracking.RunTracker(params.train.experiment)
    tracker.start(run_info["run_id"])
    # The bundle's other files sit next to model.h5 in the registered model, so that
    # models:/<name>@<alias> brings its crop contract and its TFLite model along.
    bundle_files = {name: str(Path(paths.bundle) / name) for name in ("model.tflite", "preprocessing.json", "labels.json")}
    info = pyfunc.log_model("emotion_model", Path(paths.bundle) / "model.h5", bundle_files)
    tracker.log_artifacts(paths.bundle, "bundle")
    tracker.end()
    test = scores["test"]
    version = registry.register(
        cfg.registered_model,
        info.model_uri,
        tags={
            "test_accuracy": f"{test['accuracy']:.4f}",
            "test_macro_f1": f"{test['macro_f1']:.4f}",
            "tflite_accuracy": f"{tflite_accuracy:.4f}",
            "test_ece": f"{calibrated['test_ece']['flip']['after']:.4f}",
            "temperature": f"{calibrated['temperature']:.4f}",
            "data_sha256": fetch_summary["table_sha256"],
            "git_commit": tracking.git_commit(),
            "architecture": params.train.model,
        },
        run_id=run_info["run_id"],
    )
    log(
        f"wrote {paths.bundle}; registered {cfg.registered_model} version {version.version} (alias candidate). "
        f"Promote it with `ferlab models promote`."
    )


if __name__ == "__main__":
    run(main)
