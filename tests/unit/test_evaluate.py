import numpy as np
import pytest

from ferlab.contract import EMOTIONS
from ferlab.training.evaluate import scores


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


def test_ten_views_show_a_centre_cropping_model_the_corner_and_centre_crops():
    from ferlab.contract import ten_views

    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    views = ten_views(face[None], shift=2)
    assert views.shape == (10, 1, 48, 48) and views.dtype == np.uint8
    seen = [v[0, 2:46, 2:46] for v in views]  # what ferlab_cnn's centre 44x44 crop sees
    corners = [face[:44, :44], face[:44, 4:], face[4:, :44], face[4:, 4:], face[2:46, 2:46]]
    for got, want in zip(seen[:5], corners):
        assert np.array_equal(got, want)
    for plain, mirrored in zip(seen[:5], seen[5:]):
        assert np.array_equal(mirrored, plain[:, ::-1])


def test_ten_crop_shift_follows_the_models_centre_crop():
    from ferlab.training import models
    from ferlab.training.evaluate import corner_shift

    assert corner_shift(models.build("ferlab_cnn")) == 2
    assert corner_shift(models.build("ferlab_cnn", crop=40)) == 4
    assert corner_shift(models.build("paper_cnn")) == 2  # sees the whole face: a 2-pixel jitter


class MeanBrightness:
    """A stand-in model: class 0 is the share of bright pixels."""

    def predict(self, x, batch_size=None, verbose=0):
        p = (x > 0.5).mean(axis=(1, 2, 3))
        return np.stack([p, 1 - p] + [np.zeros_like(p)] * 5, axis=1)


def test_ten_crop_probabilities_are_the_mean_over_the_views():
    from ferlab.training.evaluate import predict_proba_ten_crop

    face = np.zeros((2, 48, 48), np.uint8)
    face[0, :24, :24] = 255
    got = predict_proba_ten_crop(MeanBrightness(), face)
    from ferlab.contract import ten_views

    views = ten_views(face)
    want = np.mean([(v > 127).mean(axis=(1, 2)) for v in views], axis=0)
    assert got.shape == (2, 7) and np.allclose(got[:, 0], want, atol=0.02) and got[1, 0] == 0


def test_scale_rotate_views_scale_and_turn_the_face_about_its_centre():
    import cv2

    from ferlab.contract import scale_rotate_matrices, scale_rotate_views

    face = np.full((48, 48), 100, np.uint8)
    face[22:26, 36:40] = 255  # a spot right of the centre, 14 px out
    views = scale_rotate_views(face[None])
    assert views.shape == (10, 1, 48, 48) and views.dtype == np.uint8
    assert np.array_equal(views[0, 0], face)
    for plain, mirrored in zip(views[:5], views[5:]):
        assert np.array_equal(mirrored, plain[:, :, ::-1])

    def spot_at(view):
        ys, xs = np.nonzero(view > 200)
        return ys.mean(), xs.mean()

    centre = 23.5
    for (angle, scale), view in zip(((0, 0.9), (0, 1.1), (-8, 1), (8, 1)), views[1:5, 0]):
        y, x = spot_at(view)
        turn = np.radians(angle)  # positive: anticlockwise on the screen, so the spot (right of centre) rises
        assert x == pytest.approx(centre + 14 * scale * np.cos(turn), abs=0.6)
        assert y == pytest.approx(centre - 14 * scale * np.sin(turn), abs=0.6)
    # the matrices are the views' maps: undoing one puts the spot back
    for m, view in zip(scale_rotate_matrices(), views[:5, 0]):
        back = cv2.warpAffine(view, m, (48, 48), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
        assert spot_at(back) == pytest.approx((23.5, 37.5), abs=0.6)
    assert scale_rotate_views(np.zeros((0, 48, 48), np.uint8)).shape == (10, 0, 48, 48)


def test_scale_rotate_probabilities_are_the_mean_over_the_views():
    from ferlab.contract import scale_rotate_views
    from ferlab.training.evaluate import predict_proba_scale_rotate

    face = np.zeros((2, 48, 48), np.uint8)
    face[0, 10:30, 10:30] = 255
    got = predict_proba_scale_rotate(MeanBrightness(), face)
    want = np.mean([(v > 127).mean(axis=(1, 2)) for v in scale_rotate_views(face)], axis=0)
    assert got.shape == (2, 7) and np.allclose(got[:, 0], want, atol=1e-6) and got[1, 0] == 0
    assert not np.isclose(got[0, 0], (face[0] > 127).mean())  # the grown view shows more of the square
