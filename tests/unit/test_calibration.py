import numpy as np
import pytest

from ferlab.errors import FerlabError
from ferlab.training.calibration import expected_calibration_error, fit_temperature, reliability, tempered, with_temperature


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def overconfident(n=4000, seed=0):
    """Labels drawn from softmax(z), the model reports softmax(3 z): far too sure of itself."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 7))
    y = np.array([rng.choice(7, p=p) for p in softmax(z)])
    return softmax(3 * z), y


def test_ece_of_a_known_case():
    # two faces at confidence 0.9 (one right) and two at 0.6 (both right): |0.5-0.9|/2 + |1-0.6|/2
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.4)
    rows = reliability(probs, y)
    assert sum(r["faces"] for r in rows) == 4 and len(rows) == 15
    assert [r["accuracy"] for r in rows if r["faces"]] == [1.0, 0.5]


def test_a_perfectly_calibrated_model_has_a_small_ece():
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(0, 1.5, (20000, 7)))
    y = np.array([rng.choice(7, p=p) for p in probs])
    assert expected_calibration_error(probs, y) < 0.02


def test_temperature_fitted_on_one_half_calibrates_the_other():
    probs, y = overconfident()
    fit, held = slice(0, 2000), slice(2000, None)
    t = fit_temperature(probs[fit][None], y[fit])
    assert t == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(probs[held], y[held])
    after = expected_calibration_error(tempered(probs[held][None], t), y[held])
    assert before > 0.1 and after < 0.03
    assert (tempered(probs[None], t).argmax(1) == probs.argmax(1)).all()  # one view: the decision stays


def test_tempered_views_are_averaged_after_scaling():
    rng = np.random.default_rng(2)
    views = softmax(rng.normal(0, 2, (2, 5, 7)))
    expected = (softmax(np.log(views[0]) / 2.0) + softmax(np.log(views[1]) / 2.0)) / 2
    np.testing.assert_allclose(tempered(views, 2.0), expected, rtol=1e-6)
    np.testing.assert_allclose(tempered(views, 1.0), views.mean(0), rtol=1e-6)


def test_with_temperature_scales_the_softmax_of_a_keras_model():
    import keras

    rng = np.random.default_rng(3)
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))
    faces = rng.random((4, 48, 48, 1)).astype("float32")
    raw = model.predict(faces, verbose=0)
    scaled = with_temperature(model, 0.5).predict(faces, verbose=0)
    np.testing.assert_allclose(scaled, tempered(raw[None], 0.5), atol=1e-5)
    np.testing.assert_allclose(model.predict(faces, verbose=0), raw)  # the original is untouched

    plain = keras.Model(inputs, keras.layers.Dense(7)(x))
    with pytest.raises(FerlabError, match="softmax"):
        with_temperature(plain, 2.0)
