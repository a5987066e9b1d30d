"""Two models' answers on the same faces, with bootstrap 95% intervals (`ferlab adapt`'s before and after).

    figures = compare(y, before_probs, after_probs, emotions)
    figures["after"]["accuracy"], figures["after"]["accuracy_ci"], figures["gain"]["accuracy_ci"]

Each figure is the plain one (training.evaluate.scores, the one evaluator); its interval is the 2.5th and
97.5th percentiles over `rounds` resamplings of the faces with replacement. The gain's interval resamples the
faces once for both models (paired), so it is narrower than the two intervals side by side suggest: what it
asks is whether the same faces got better, not whether two samples differ.
"""

import numpy as np

from ferlab.training.evaluate import scores

ROUNDS = 1000


def _accuracy_and_macro_f1(y: np.ndarray, pred: np.ndarray, classes: int, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 (over the `present` classes) of each row of y, pred (R, N) at once."""
    rounds = y.shape[0]
    flat = (np.arange(rounds)[:, None] * classes * classes + y * classes + pred).ravel()
    cm = np.bincount(flat, minlength=rounds * classes * classes).reshape(rounds, classes, classes).astype(float)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    predicted, actual = cm.sum(axis=1), cm.sum(axis=2)
    f1 = np.divide(2 * tp, predicted + actual, out=np.zeros_like(tp), where=(predicted + actual) > 0)
    return tp.sum(axis=1) / y.shape[1], f1[:, present].mean(axis=1)


def _interval(values: np.ndarray) -> list[float]:
    return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]


def figures_of(y: np.ndarray, probs: np.ndarray, emotions: tuple[str, ...]) -> dict:
    """Accuracy, macro-F1 (over the classes present in y), per-class precision/recall/F1 and the
    confusion matrix of one model's probabilities."""
    present = sorted(set(np.asarray(y).tolist()))
    result = scores(np.asarray(y), probs.argmax(1), macro_labels=present, emotions=emotions)
    return {
        "accuracy": round(result["accuracy"], 4),
        "macro_f1": round(result["macro_f1"], 4),
        "per_class": {
            e: {
                "precision": round(c["precision"], 4),
                "recall": round(c["recall"], 4),
                "f1": round(c["f1-score"], 4),
                "support": int(c["support"]),
            }
            for e, c in result["per_class"].items()
        },
        "confusion_matrix": result["confusion_matrix"],
    }


def compare(y, before: np.ndarray, after: np.ndarray, emotions: tuple[str, ...], rounds: int = ROUNDS, seed: int = 0) -> dict:
    """The figures of `before` and `after` (N, k) probabilities on the faces with labels y, each with
    bootstrap 95% intervals, and the paired interval of the gain (after - before)."""
    y = np.asarray(y, dtype=np.int64)
    k = len(emotions)
    present = np.array(sorted(set(y.tolist())))
    picks = np.random.default_rng(seed).integers(0, len(y), size=(rounds, len(y)))
    ys = y[picks]
    out: dict = {"faces": int(len(y)), "bootstrap_rounds": rounds}
    sampled = {}
    for name, probs in (("before", before), ("after", after)):
        figures = figures_of(y, probs, emotions)
        acc, f1 = _accuracy_and_macro_f1(ys, probs.argmax(1)[picks], k, present)
        sampled[name] = (acc, f1)
        out[name] = figures | {"accuracy_ci": _interval(acc), "macro_f1_ci": _interval(f1)}
    out["gain"] = {
        "accuracy": round(out["after"]["accuracy"] - out["before"]["accuracy"], 4),
        "accuracy_ci": _interval(sampled["after"][0] - sampled["before"][0]),
        "macro_f1": round(out["after"]["macro_f1"] - out["before"]["macro_f1"], 4),
        "macro_f1_ci": _interval(sampled["after"][1] - sampled["before"][1]),
    }
    return out
