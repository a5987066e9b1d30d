"""The one evaluator: a model scored on faces with their labels, in dataset order.

    split = score_split(model, faces, labels, modes=("none", "flip"))   # probabilities and scores per mode
    result = evaluate(model, {"val": (x_val, y_val), "test": (x_test, y_test)})  # + calibration
    metrics = metrics_of(result)                                       # the DVC metrics (reports/metrics.json)
    write_report(folder, result, x_test, ids_test, seed, example_faces)  # reports/evaluate/*

Modes are the ways a face is shown to the model (MODES): alone ("none"), with its mirror image
("flip", the tools' default), ten shifted and mirrored views ("ten_crop"), ten scaled, turned and
mirrored views ("scale_rotate"). Every figure of a mode (accuracy, macro-F1, per class, confusion
matrix, report) derives from the same predictions in the same order, so they agree. The evaluate
stage, `ferlab models ship`, the long recipe's scoring and the benchmarks score through here;
`ferlab evaluate` (the recognizer on the user's photos) takes its figures from `scores`.
"""

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, f1_score

from ferlab.contract import EMOTIONS, TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT, normalize, scale_rotate_views, ten_views

MODES = ("none", "flip", "ten_crop", "scale_rotate")  # as the reports name them (the tools' --tta: contract.TTA_MODES)
SPLIT_NAMES = {"train": TRAIN_SPLIT, "val": VAL_SPLIT, "test": TEST_SPLIT}  # the arrays' keys -> FER2013's names
# reports/evaluate/, as write_report writes them (and the evaluate stage logs them to MLflow)
REPORT_FILES = (
    "classification_report.txt",
    "confusion_matrix.png",
    "per_class_f1.png",
    "test_examples.png",
    "scores.json",
    "calibration.json",
    "reliability.png",
)


def predict_proba(model, faces: np.ndarray, batch_size: int = 256, flip: bool = False) -> np.ndarray:
    """Class probabilities for uint8 faces (N, 48, 48), in input order; `flip` averages with the mirror image."""
    x = normalize(faces)
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    if flip:
        probs = (probs + model.predict(x[:, :, ::-1, :], batch_size=batch_size, verbose=0)) / 2.0
    return np.asarray(probs, dtype=np.float64)


def corner_shift(model) -> int:
    """The shift whose `ten_views` show `model` its corner crops: the margin its `centre_crop`
    layer trims (2 for a crop of 44, 4 for 40); 2 pixels for a model that sees the whole face."""
    for layer in getattr(model, "layers", []):
        if layer.name == "centre_crop":
            return int(layer.cropping[0][0])
    return 2


def predict_proba_ten_crop(model, faces: np.ndarray, batch_size: int = 256, shift: int | None = None) -> np.ndarray:
    """Test-time augmentation: the mean probabilities over the `ten_views` of each face
    (shift: `corner_shift(model)` unless given)."""
    views = ten_views(faces, corner_shift(model) if shift is None else shift)
    return np.mean([predict_proba(model, v, batch_size) for v in views], axis=0)


def predict_proba_scale_rotate(model, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Test-time augmentation: the mean probabilities over the `scale_rotate_views` of each face."""
    return np.mean([predict_proba(model, v, batch_size) for v in scale_rotate_views(faces)], axis=0)


def scores(y_true: np.ndarray, y_pred: np.ndarray, macro_labels: list[int] | None = None, emotions: tuple[str, ...] = EMOTIONS) -> dict:
    """Every number derives from the same (y_true, y_pred) pairs, so they agree with each other.
    macro_labels: the class ids macro-F1 averages over (default: all seven; `ferlab evaluate` leaves
    out the classes its set lacks). emotions: the names of the ids (a model with fewer outputs: its own)."""
    labels = list(range(len(emotions)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(emotions), output_dict=True, zero_division=0)
    text = classification_report(y_true, y_pred, labels=labels, target_names=list(emotions), digits=4, zero_division=0)
    row_sums = cm.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=macro_labels or labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "n": int(len(y_true)),
        "per_class": {name: {k: report[name][k] for k in ("precision", "recall", "f1-score", "support")} for name in emotions},
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": np.divide(cm, np.maximum(row_sums, 1)).round(4).tolist(),
        "report_text": text,
    }


# ---- the evaluator ------------------------------------------------------------------------


def mirror_views(model, faces: np.ndarray, batch_size: int = 256, one: np.ndarray | None = None) -> np.ndarray:
    """(2, N, 7): the probabilities of each face and of its mirror image: flip's two views, the
    ones the temperature is fitted on. one: the faces' own probabilities, where already computed."""
    one = predict_proba(model, faces, batch_size) if one is None else one
    return np.stack([one, predict_proba(model, faces[:, :, ::-1], batch_size)])


def probabilities(model, faces: np.ndarray, mode: str = "none", batch_size: int = 256, views: np.ndarray | None = None) -> np.ndarray:
    """(N, 7) probabilities of the faces shown to the model in one of MODES; views: their
    mirror_views where already computed (for "none" and "flip")."""
    if mode == "none":
        return predict_proba(model, faces, batch_size) if views is None else views[0]
    if mode == "flip":
        return (mirror_views(model, faces, batch_size) if views is None else views).mean(0)
    if mode == "ten_crop":
        return predict_proba_ten_crop(model, faces, batch_size)
    if mode == "scale_rotate":
        return predict_proba_scale_rotate(model, faces, batch_size)
    raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")


@dataclass
class SplitScores:
    """One split scored in several modes."""

    labels: np.ndarray
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # mode -> (N, 7), in MODES order
    scores: dict[str, dict] = field(default_factory=dict)  # mode -> scores()
    views: np.ndarray | None = None  # (2, N, 7) mirror_views, where computed


def score_split(
    model,
    faces: np.ndarray,
    labels: np.ndarray,
    modes: tuple[str, ...] = MODES,
    batch_size: int = 256,
    mirror: bool = False,
    on_score: Callable[[str, dict], None] | None = None,
) -> SplitScores:
    """The faces scored one view ("none", always) and in each of `modes`; mirror: keep the
    mirror_views even where "flip" is not among the modes (calibration needs them).
    on_score(mode, scores) after each mode is scored (progress, logs)."""
    split = SplitScores(np.asarray(labels))
    split.probabilities["none"] = predict_proba(model, faces, batch_size)
    if mirror or "flip" in modes:
        split.views = mirror_views(model, faces, batch_size, one=split.probabilities["none"])
    for mode in MODES:
        if mode == "none" or mode in modes:
            if mode != "none":
                split.probabilities[mode] = probabilities(model, faces, mode, batch_size, split.views)
            split.scores[mode] = scores(split.labels, split.probabilities[mode].argmax(1))
            if on_score:
                on_score(mode, split.scores[mode])
    return split


@dataclass
class Evaluation:
    splits: dict[str, SplitScores]  # "train", "val", "test" -> its scores
    calibration: dict  # calibration.report: the temperature fitted on "val", judged on "test"

    @property
    def results(self) -> dict[str, dict]:
        """scores() by name, split by split: "val" (one view), "val_tta_flip", "val_tta_ten_crop", ..."""
        return {
            key if mode == "none" else f"{key}_tta_{mode}": result
            for key, split in self.splits.items()
            for mode, result in split.scores.items()
        }


def evaluate(
    model,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    modes: tuple[str, ...] = MODES,
    batch_size: int = 256,
    calibrate: bool = True,
    plain_only: tuple[str, ...] = ("train",),
    log: Callable[[str], None] | None = None,
) -> Evaluation:
    """`model` on each split (arrays' key -> (uint8 faces, label ids)), in `modes`; the splits in
    `plain_only` one view only. Then the calibration (ferlab.training.calibration.report): a
    temperature fitted on "val"'s mirror views (1 where not `calibrate`), judged on "test"'s."""
    from ferlab.training import calibration

    scored = {}
    for key, (faces, labels) in splits.items():
        name = SPLIT_NAMES.get(key, key)

        def said(mode: str, result: dict, name: str = name) -> None:
            if log and mode == "none":
                log(f"{name}: accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f}")
            elif log:
                log(f"{name} with {mode.replace('_', '-')} TTA: accuracy {result['accuracy']:.4f}")

        plain = key in plain_only
        scored[key] = score_split(model, faces, labels, () if plain else modes, batch_size, mirror=not plain, on_score=said)
    val, test = scored["val"], scored["test"]
    return Evaluation(scored, calibration.report(val.views, val.labels, test.views, test.labels, calibrate))


def metrics_of(evaluation: Evaluation, per_class: tuple[str, ...] = ("test",)) -> dict:
    """The DVC metrics (reports/metrics.json): accuracy, macro- and weighted F1 of every result, the
    per-class F1 and recall of the splits in `per_class` (one view), the calibration."""
    results = evaluation.results
    metrics = {name: {k: round(r[k], 4) for k in ("accuracy", "macro_f1", "weighted_f1")} for name, r in results.items()}
    for key in per_class:
        metrics[key]["per_class_f1"] = {e: round(results[key]["per_class"][e]["f1-score"], 4) for e in EMOTIONS}
        metrics[key]["per_class_recall"] = {e: round(results[key]["per_class"][e]["recall"], 4) for e in EMOTIONS}
    calibrated = evaluation.calibration
    metrics["calibration"] = {
        "temperature": calibrated["temperature"],
        "ece_before": calibrated["test_ece"]["flip"]["before"],
        "ece_after": calibrated["test_ece"]["flip"]["after"],
    }
    return metrics


def write_report(folder: str | Path, evaluation: Evaluation, test_faces: np.ndarray, test_ids, seed: int, example_faces: int) -> None:
    """REPORT_FILES into `folder` (which exists): the calibration and its reliability diagram,
    every result's scores and classification report, PrivateTest's predictions (one view), its
    confusion matrix, per-class F1 and a sheet of `example_faces` faces picked with `seed`."""
    from ferlab import plots
    from ferlab.fileio import write_json
    from ferlab.training import calibration

    out, results, calibrated = Path(folder), evaluation.results, evaluation.calibration
    test = results["test"]
    y_test = evaluation.splits["test"].labels
    test_probs = evaluation.splits["test"].probabilities["none"]
    y_pred = test_probs.argmax(1)
    write_json(out / "calibration.json", calibrated)
    calibration.plot_reliability(
        calibrated["reliability"]["before"],
        calibrated["reliability"]["after"],
        out / "reliability.png",
        f"{TEST_SPLIT}, flip TTA, temperature {calibrated['temperature']:.3f}",
    )
    write_json(out / "scores.json", {k: {m: v for m, v in r.items() if m != "report_text"} for k, r in results.items()})
    (out / "classification_report.txt").write_text(
        "".join(f"== {SPLIT_NAMES.get(k, k)} ==\n{r['report_text']}\n" for k, r in results.items())
    )
    with open(out / "test_predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "actual", "predicted", *[f"p_{e}" for e in EMOTIONS]])
        for i, (t, p) in enumerate(zip(y_test, y_pred)):
            writer.writerow([test_ids[i], EMOTIONS[t], EMOTIONS[p], *np.round(test_probs[i], 4)])
    plots.confusion(test["confusion_matrix"], out / "confusion_matrix.png", f"{TEST_SPLIT} (accuracy {test['accuracy']:.3f})")
    plots.per_class_f1(test["per_class"], out / "per_class_f1.png", f"{TEST_SPLIT} F1 (macro {test['macro_f1']:.3f})")
    picks = np.random.default_rng(seed).choice(len(y_test), min(example_faces, len(y_test)), replace=False)
    plots.labelled_faces(
        [test_faces[i] for i in picks],
        [EMOTIONS[y_test[i]] for i in picks],
        [EMOTIONS[y_pred[i]] for i in picks],
        out / "test_examples.png",
    )
