import numpy as np
import pytest

from ferlab.config import Preprocess
from ferlab.data import arrays
from ferlab.data.table import make_table


def toy_table():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 48, 48), dtype=np.uint8)
    images[1] = 0  # a blank Training frame
    images[6] = images[2]  # a PrivateTest image leaked from Training
    splits = ["Training"] * 4 + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    labels = [0, 1, 3, 3, 3, 1, 3, 0]
    return make_table([f"i{i}" for i in range(8)], splits, labels, images)


def test_split_arrays_and_drops():
    a = arrays.build(toy_table(), Preprocess(drop_blank_train=True, drop_test_leaks=True), 2.0, seed=0)
    assert a.dropped == {"train": ["i1"], "val": [], "test": ["i6"]}
    assert a.x["train"].shape == (3, 48, 48) and a.x["train"].dtype == np.uint8
    assert a.ids["test"].tolist() == ["i7"]
    kept = arrays.build(toy_table(), Preprocess(drop_blank_train=False, drop_test_leaks=False), 2.0, seed=0)
    assert len(kept.y["train"]) == 4 and len(kept.y["test"]) == 2


def test_class_weights():
    y = np.array([0] * 90 + [1] * 10)
    balanced = arrays.class_weights(y, "balanced")
    assert balanced[1] / balanced[0] == pytest.approx(9.0, rel=1e-3)
    assert np.isclose(arrays.class_weights(y, "sqrt")[1] / arrays.class_weights(y, "sqrt")[0], 3.0)
    assert arrays.class_weights(y, "none") is None


def test_oversample_brings_minorities_up():
    x = np.arange(12).reshape(12, 1, 1).repeat(48, 1).repeat(48, 2).astype(np.uint8)
    y = np.array([0] * 10 + [1] * 2)
    ids = np.array([f"i{i}" for i in range(12)])
    xo, yo, io = arrays.oversample(x, y, ids, 6, seed=0)
    assert np.bincount(yo).tolist() == [10, 6]
    assert set(io[yo == 1]) == {"i10", "i11"}


def test_save_load_roundtrip(tmp_path):
    a = arrays.build(toy_table(), Preprocess(), 2.0, seed=0)
    arrays.save(a, tmp_path / "a.npz")
    b = arrays.load(tmp_path / "a.npz")
    for k in ("train", "val", "test"):
        assert np.array_equal(a.x[k], b.x[k]) and np.array_equal(a.y[k], b.y[k])
