import numpy as np

from ferlab.evaluate import scores
from ferlab.labels import EMOTIONS


def test_report_confusion_and_accuracy_agree():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 7, 500)
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, 7, 500))
    s = scores(y_true, y_pred)
    cm = np.array(s["confusion_matrix"])
    assert cm.sum() == 500
    assert np.isclose(s["accuracy"], np.trace(cm) / cm.sum())
    for i, name in enumerate(EMOTIONS):
        assert np.isclose(s["per_class"][name]["recall"], cm[i, i] / cm[i].sum())
        assert np.isclose(s["per_class"][name]["precision"], cm[i, i] / cm[:, i].sum())
        assert s["per_class"][name]["support"] == cm[i].sum()
    assert np.isclose(s["macro_f1"], np.mean([s["per_class"][e]["f1-score"] for e in EMOTIONS]))
    assert "accuracy" in s["report_text"] and "disgust" in s["report_text"]


def test_known_small_case():
    s = scores(np.array([0, 0, 1, 3]), np.array([0, 1, 1, 3]))
    assert s["accuracy"] == 0.75
    assert s["confusion_matrix"][0][:2] == [1, 1]
    assert s["per_class"]["angry"]["recall"] == 0.5 and s["per_class"]["disgust"]["precision"] == 0.5
