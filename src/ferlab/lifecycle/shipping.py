"""From a finished training to a pretrained model shipped inside the package (`ferlab models ship`).

The bundle's calibrated .h5 is converted to TFLite twice, full-integer int8 and float16; each is
scored on PrivateTest as the tools run it (one view, flip, ten-crop), and int8 is shipped where it
stays within `MAX_DROP` of the float32 model one view and with flip, else float16. The card
(card.json, rendered as MODEL_CARD.md) holds the shipped file's figures and where it came from.
"""

import datetime as dt
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ferlab import contract
from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.fileio import atomic_path, read_json, sha256_of, write_json
from ferlab.lifecycle import model_card, pretrained
from ferlab.lifecycle.export import to_tflite

MAX_DROP = 0.003  # PrivateTest accuracy int8 may lose against the float32 model, one view and flip
REPRESENTATIVE_FACES = 300  # Training faces that set int8's activation ranges
FORMATS = ("int8", "float16")  # tried in this order
COPIED = ("labels.json", "preprocessing.json")  # from the bundle, as they are
KERAS_MAX_BYTES = 8 << 20  # the float32 .h5 ships too where it fits beside the TFLite file under 10 MB: Grad-CAM, `ferlab adapt`
TTA_SCORED = ("none", "flip", "ten_crop")


class TFLitePredictor:
    """A .tflite model with Keras' `predict(x, batch_size, verbose)`, so the evaluator's
    functions (ferlab.training.evaluate) score it exactly as they score the .h5."""

    def __init__(self, path: str | Path):
        from ferlab.litert import TFLiteModel

        self._model = TFLiteModel(path)

    def predict(self, x: np.ndarray, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        parts = [next(iter(self._model.run(x[i : i + batch_size]).values())) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts).astype(np.float32)


def score(model, faces: np.ndarray, labels: np.ndarray) -> dict:
    """PrivateTest figures of a model (Keras or TFLitePredictor) for each way the tools predict:
    accuracy, macro-F1, calibration error, and per emotion precision, recall and F1."""
    from ferlab.training.calibration import expected_calibration_error
    from ferlab.training.evaluate import score_split

    split = score_split(model, faces, labels, TTA_SCORED)
    figures = {"faces": int(len(labels))}
    for mode in TTA_SCORED:
        s = split.scores[mode]
        figures[mode] = {
            "accuracy": round(s["accuracy"], 4),
            "macro_f1": round(s["macro_f1"], 4),
            "ece": round(expected_calibration_error(split.probabilities[mode], labels), 4),
            "per_class": {
                e: {"precision": round(c["precision"], 4), "recall": round(c["recall"], 4), "f1": round(c["f1-score"], 4)}
                for e, c in s["per_class"].items()
            },
        }
    return figures


def representative_faces(x_train: np.ndarray, seed: int = 0) -> np.ndarray:
    picks = np.random.default_rng(seed).choice(len(x_train), min(REPRESENTATIVE_FACES, len(x_train)), replace=False)
    return contract.normalize(x_train[np.sort(picks)])


def choose_format(float32: dict, measured: dict) -> str:
    """int8 where it keeps the float32 model's accuracy within MAX_DROP one view and with flip, else float16."""
    for fmt in FORMATS[:-1]:
        if all(float32[m] - measured[fmt][m]["accuracy"] <= MAX_DROP for m in ("none", "flip")):
            return fmt
    return FORMATS[-1]


def ship(
    name: str,
    bundle: Path,
    x_test: np.ndarray,
    y_test: np.ndarray,
    x_train: np.ndarray,
    provenance: dict,
    root: Path | None = None,
    log=print,
) -> dict:
    """Write shipped/<name>/ from a bundle folder; return its card.

    provenance: command, params, mlflow_run_id, git_commit, data_sha256, hardware, precision, kept
    (which epochs' weights), as the card states them."""
    from ferlab.training.evaluate import score_split
    from ferlab.training.model_io import load_h5

    if name not in pretrained.NAMES:
        raise FerlabError(f"{name!r} is not a shipped model's name; choose {' or '.join(pretrained.NAMES)}.")
    for file in ("model.h5", *COPIED):
        if not (bundle / file).is_file():
            raise FerlabError(f"{bundle} has no {file}; ship a bundle made by the package stage (`dvc repro`).")
    _check_seven(bundle)
    model = load_h5(bundle / "model.h5")
    float32 = {m: round(s["accuracy"], 4) for m, s in score_split(model, x_test, y_test, ("none", "flip")).scores.items()}
    log(f"float32 .h5: PrivateTest {float32['none']:.4f} one view, {float32['flip']:.4f} flip")
    representative = representative_faces(x_train)
    measured, work = {}, Path(tempfile.mkdtemp(prefix="ferlab-ship-"))
    try:
        for fmt in FORMATS:
            to_tflite(model, work / f"{fmt}.tflite", fmt, representative if fmt == "int8" else None)
            measured[fmt] = score(TFLitePredictor(work / f"{fmt}.tflite"), x_test, y_test) | {
                "bytes": (work / f"{fmt}.tflite").stat().st_size
            }
            log(
                f"{fmt}: PrivateTest {measured[fmt]['none']['accuracy']:.4f} one view, {measured[fmt]['flip']['accuracy']:.4f} flip, "
                f"{measured[fmt]['ten_crop']['accuracy']:.4f} ten-crop; {measured[fmt]['bytes']:,} bytes"
            )
        chosen = choose_format(float32, measured)
        card = {
            "name": name,
            "version": f"{name}-{dt.date.today():%Y%m%d}",
            "architecture": provenance["architecture"],
            "parameters": int(model.count_params()),
            "format": chosen,
            "emotions": list(EMOTIONS),
            "privatetest": {k: v for k, v in measured[chosen].items() if k != "bytes"},
            "formats": {
                "float32": float32,
                **{fmt: {"none": m["none"]["accuracy"], "flip": m["flip"]["accuracy"], "bytes": m["bytes"]} for fmt, m in measured.items()},
                "rule": f"int8 where it loses at most {MAX_DROP * 100:.1f} points against float32 one view and with flip, else float16",
            },
            "training": {k: provenance[k] for k in ("command", "params", "mlflow_run_id", "git_commit", "hardware", "precision", "kept")},
            "data": {"dataset": "FER2013", "table_sha256": provenance["data_sha256"]},
            "keras_h5": (bundle / "model.h5").stat().st_size <= KERAS_MAX_BYTES,
            "shipped_on": {"date": f"{dt.date.today()}", "by": platform.node() or "unknown"},
        }
        with atomic_path(pretrained.folder_of(name, root)) as out:
            out.mkdir()
            shutil.copyfile(work / f"{chosen}.tflite", out / "model.tflite")
            for file in COPIED:
                shutil.copyfile(bundle / file, out / file)
            if card["keras_h5"]:
                shutil.copyfile(bundle / "model.h5", out / "model.h5")
            (out / "MODEL_CARD.md").write_text(model_card.render_shipped(card))
            card["files"] = {p.name: sha256_of(p) for p in sorted(out.iterdir())}
            write_json(out / pretrained.CARD, card)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pretrained._verified.discard(pretrained.folder_of(name, root))
    log(f"shipped {pretrained.PREFIX}{name} ({chosen}) in {pretrained.folder_of(name, root)}")
    return card


def _check_seven(bundle: Path) -> None:
    """A shipped model answers with FER2013's seven emotions (it is scored on PrivateTest and stands in for any model)."""
    from ferlab.lifecycle.pyfunc import emotions_of

    try:
        declared = emotions_of(bundle / "labels.json")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FerlabError(f"{bundle / 'labels.json'} is unreadable ({err}); rebuild the bundle with `dvc repro`.") from None
    if declared != EMOTIONS:
        raise FerlabError(
            f"{bundle} answers with {', '.join(declared)}; a shipped model answers with FER2013's seven emotions in their order "
            "and is scored on PrivateTest, so ship a bundle of the pipeline's (`dvc repro`), not one of `ferlab adapt --emotions`."
        )


def provenance_of_checkout(command: str, hardware: str | None) -> dict:
    """What the card says of the training behind this checkout's models/bundle: the MLflow run
    named in reports/train/run.json (its params and tags) and the fetch stage's data checksum."""
    from ferlab import config
    from ferlab.lifecycle import tracking
    from ferlab.lifecycle.model_card import kept_weights

    params = config.current()
    run = read_json(Path(params.paths.train_report) / "run.json")
    if tracking.connect() is None:
        raise FerlabError(f"there is no MLflow store at {tracking.tracking_uri()} to read run {run['run_id']} from; ship where it trained.")
    import mlflow

    logged = mlflow.get_run(run["run_id"])
    tags = logged.data.tags
    hardware = hardware or tags.get("hardware")
    if not hardware:
        raise FerlabError(f"run {run['run_id']} does not record its hardware; say what trained it with --hardware.")
    return {
        "architecture": params.train.model,
        "command": command,
        "params": dict(sorted(logged.data.params.items())),
        "mlflow_run_id": run["run_id"],
        "git_commit": tags.get("git_commit", "unknown"),
        "hardware": hardware,
        "precision": run["precision"],
        "kept": kept_weights(run),
        "data_sha256": read_json(params.paths.raw_summary)["table_sha256"],
    }
