"""Calibrated probabilities: temperature scaling, its error measure and its picture.

The network ends in Dense -> softmax, so dividing that layer's weights and bias by a
temperature T gives softmax(logits / T) with no new layer: every format the model is
exported to (.h5, TFLite, the registered model) carries the calibration as it is.
T is fitted on PublicTest for the way the tools predict (the mean over the test-time views),
and judged on PrivateTest by the expected calibration error.
"""

import numpy as np

from ferlab.errors import FerlabError

ECE_BINS = 15


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """The mean gap between confidence (top probability) and accuracy, over equal-width
    confidence bins, weighted by the share of faces in each bin."""
    rows = [r for r in reliability(probs, y, bins) if r["faces"]]
    return float(sum(r["faces"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / max(len(y), 1))


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin: its range, faces, mean confidence and accuracy (for the diagram)."""
    confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == y)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "faces": int(inside.sum()),
                "confidence": float(confidence[inside].mean()) if inside.any() else None,
                "accuracy": float(correct[inside].mean()) if inside.any() else None,
            }
        )
    return rows


def tempered(view_probs: np.ndarray, temperature: float) -> np.ndarray:
    """(views, N, C) softmax outputs -> (N, C): each view re-tempered, then averaged as the tools do."""
    logits = np.log(np.clip(view_probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    scaled /= scaled.sum(axis=-1, keepdims=True)
    return scaled.mean(axis=0)


def fit_temperature(view_probs: np.ndarray, y: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the negative log-likelihood of `tempered` probabilities."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        probs = tempered(view_probs, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))

    best = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(best.x))


def report(val_views: np.ndarray, y_val: np.ndarray, test_views: np.ndarray, y_test: np.ndarray, fit: bool = True) -> dict:
    """The temperature fitted on PublicTest's (views, N, C) probabilities (each face and its mirror image)
    and PrivateTest's calibration error before and after it, with flip and one view; the reliability
    rows of PrivateTest with flip (the evaluate stage's calibration.json). fit False: temperature 1."""
    temperature = fit_temperature(val_views, y_val) if fit else 1.0
    ece = {
        mode: {
            "before": expected_calibration_error(tempered(v, 1.0), y_test),
            "after": expected_calibration_error(tempered(v, temperature), y_test),
        }
        for mode, v in (("flip", test_views), ("none", test_views[:1]))
    }
    return {
        "method": "temperature" if fit else "none",
        "temperature": round(temperature, 4),
        "fitted_on": "PublicTest, the mean of each face and its mirror image (the tools' default)",
        "bins": ECE_BINS,
        "test_ece": {mode: {k: round(v, 4) for k, v in e.items()} for mode, e in ece.items()},
        "reliability": {
            "before": reliability(tempered(test_views, 1.0), y_test),
            "after": reliability(tempered(test_views, temperature), y_test),
        },
    }


def with_temperature(model, temperature: float):
    """A copy of `model` whose softmax is divided by `temperature` (its last Dense layer scaled)."""
    import keras

    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense) or last.get_config().get("activation") != "softmax":
        raise FerlabError(f"{model.name} does not end in a softmax Dense layer, so it cannot be calibrated; set package.calibrate: false.")
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    kernel, bias = last.get_weights()
    clone.layers[-1].set_weights([kernel / temperature, bias / temperature])
    return clone


def plot_reliability(before: list[dict], after: list[dict], path, title: str) -> None:
    """Accuracy against confidence per bin, before and after scaling, with the diagonal."""
    from ferlab import plots

    fig, axes = plots.plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for ax, (label, rows) in zip(axes, (("before", before), ("after", after))):
        filled = [r for r in rows if r["faces"]]
        centres = [(r["low"] + r["high"]) / 2 for r in filled]
        width = filled[0]["high"] - filled[0]["low"] if filled else 0.05
        ax.bar(centres, [r["accuracy"] for r in filled], width=width * 0.9, color="tab:blue", label="accuracy")
        ax.plot(
            centres,
            [r["confidence"] for r in filled],
            "o",
            color="tab:orange",
            markersize=4,
            label="mean confidence (calibrated: on the bar's top)",
        )
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top probability)")
        ax.set_title(label)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    plots.save(fig, path)
