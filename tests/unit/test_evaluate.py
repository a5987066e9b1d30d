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


# ---- the one evaluator (the evaluate stage, models ship, the long recipe's scoring, the benchmarks) ----


def faces_and_labels(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces with a bright share that MeanBrightness reads as class 0's probability; labels that
    mostly agree with it."""
    rng = np.random.default_rng(seed)
    share = rng.random(n)
    faces = (rng.random((n, 48, 48)) < share[:, None, None]).astype(np.uint8) * 255
    labels = np.where(rng.random(n) < 0.8, (share < 0.5).astype(int), rng.integers(0, 7, n))
    return faces, labels


def test_a_split_is_scored_in_each_mode_from_one_set_of_predictions():
    from ferlab.training.evaluate import mirror_views, predict_proba, probabilities, score_split

    faces, labels = faces_and_labels()
    model = MeanBrightness()
    split = score_split(model, faces, labels, ("flip", "ten_crop"))
    assert list(split.scores) == ["none", "flip", "ten_crop"] == list(split.probabilities)
    views = mirror_views(model, faces)
    assert np.array_equal(split.views, views) and views.shape == (2, 60, 7)
    assert np.array_equal(split.probabilities["none"], views[0]) and np.array_equal(split.probabilities["flip"], views.mean(0))
    assert np.array_equal(split.probabilities["ten_crop"], probabilities(model, faces, "ten_crop"))
    for mode, result in split.scores.items():
        assert result == scores(labels, split.probabilities[mode].argmax(1))
    assert np.array_equal(views[1], predict_proba(model, faces[:, :, ::-1]))  # the mirror images
    plain = score_split(model, faces, labels, ())
    assert list(plain.scores) == ["none"] and plain.views is None
    assert score_split(model, faces, labels, (), mirror=True).views.shape == (2, 60, 7)
    with pytest.raises(ValueError, match="unknown mode 'sideways'"):
        probabilities(model, faces, "sideways")


def test_evaluate_names_every_result_as_the_reports_do_and_calibrates_on_publictest():
    from ferlab.training import calibration
    from ferlab.training.evaluate import evaluate, metrics_of

    said = []
    splits = {key: faces_and_labels(n, seed) for key, n, seed in (("train", 40, 1), ("val", 60, 2), ("test", 50, 3))}
    result = evaluate(MeanBrightness(), splits, ("flip", "scale_rotate"), calibrate=True, log=said.append)
    names = ["train", "val", "val_tta_flip", "val_tta_scale_rotate", "test", "test_tta_flip", "test_tta_scale_rotate"]
    assert list(result.results) == names
    assert said[0].startswith("Training: accuracy") and said[2].startswith("PublicTest with flip TTA: accuracy")
    val, test = result.splits["val"], result.splits["test"]
    assert result.calibration == calibration.report(val.views, splits["val"][1], test.views, splits["test"][1], True)
    assert result.calibration["temperature"] != 1.0
    metrics = metrics_of(result, per_class=("val", "test"))
    assert list(metrics) == [*result.results, "calibration"]
    assert metrics["test_tta_flip"]["accuracy"] == round(result.results["test_tta_flip"]["accuracy"], 4)
    assert set(metrics["val"]) == {"accuracy", "macro_f1", "weighted_f1", "per_class_f1", "per_class_recall"}
    assert "per_class_f1" not in metrics_of(result)["val"] and "per_class_f1" in metrics_of(result)["test"]
    assert metrics["calibration"]["ece_after"] == result.calibration["test_ece"]["flip"]["after"]
    off = evaluate(MeanBrightness(), splits, (), calibrate=False)
    assert list(off.results) == ["train", "val", "test"] and off.calibration["temperature"] == 1.0


def test_write_report_writes_the_stages_files_from_the_same_predictions(tmp_path):
    import csv
    import json

    from ferlab.training.evaluate import REPORT_FILES, evaluate, write_report

    splits = {key: faces_and_labels(n, seed) for key, n, seed in (("val", 60, 2), ("test", 50, 3))}
    result = evaluate(MeanBrightness(), splits, ("flip",))
    ids = np.array([f"t{i}" for i in range(50)])
    write_report(tmp_path, result, splits["test"][0], ids, seed=0, example_faces=8)
    assert {p.name for p in tmp_path.iterdir()} == {*REPORT_FILES, "test_predictions.csv"}
    rows = list(csv.DictReader(open(tmp_path / "test_predictions.csv")))
    predicted = result.splits["test"].probabilities["none"].argmax(1)
    assert [r["id"] for r in rows] == list(ids) and [r["predicted"] for r in rows] == [EMOTIONS[p] for p in predicted]
    assert np.mean([r["actual"] == r["predicted"] for r in rows]) == pytest.approx(result.results["test"]["accuracy"])
    assert json.loads((tmp_path / "scores.json").read_text())["test_tta_flip"]["n"] == 50
    text = (tmp_path / "classification_report.txt").read_text()
    assert [line for line in text.splitlines() if line.startswith("==")] == [
        "== PublicTest ==",
        "== val_tta_flip ==",
        "== PrivateTest ==",
        "== test_tta_flip ==",
    ]
    assert json.loads((tmp_path / "calibration.json").read_text())["temperature"] == result.calibration["temperature"]


def test_the_users_set_leaves_absent_classes_out_of_the_macro_average():
    s = scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), macro_labels=[0, 1])
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 7)
