"""Scores from one set of predictions in dataset order: accuracy, F1, report, confusion matrix."""

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, f1_score

from ferlab.contract import EMOTIONS, NUM_CLASSES, normalize, scale_rotate_views, ten_views


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


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Every number derives from the same (y_true, y_pred) pairs, so they agree with each other."""
    labels = list(range(NUM_CLASSES))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(EMOTIONS), output_dict=True, zero_division=0)
    text = classification_report(y_true, y_pred, labels=labels, target_names=list(EMOTIONS), digits=4, zero_division=0)
    row_sums = cm.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "n": int(len(y_true)),
        "per_class": {name: {k: report[name][k] for k in ("precision", "recall", "f1-score", "support")} for name in EMOTIONS},
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": np.divide(cm, np.maximum(row_sums, 1)).round(4).tolist(),
        "report_text": text,
    }
