"""benchmarks/weight_average.py: the averages it scores are the means of the epochs it names."""

import importlib.util
import json
import sys

import numpy as np
import pytest
from conftest import REPO

from ferlab.data import arrays as arrays_mod
from ferlab.training import models

spec = importlib.util.spec_from_file_location("weight_average", REPO / "benchmarks/weight_average.py")
weight_average = importlib.util.module_from_spec(spec)
spec.loader.exec_module(weight_average)

TINY = {"widths": [4, 4, 4, 4], "depths": [1, 1, 1, 1], "dense": 8}


@pytest.fixture
def epochs(tmp_path):
    """Three checkpoints whose every weight is the epoch's number, and a processed folder."""
    rng = np.random.default_rng(0)
    x = {split: rng.integers(0, 256, (14, 48, 48), dtype=np.uint8) for split in ("train", "val", "test")}
    y = {split: np.arange(14) % 7 for split in x}
    arrays_mod.save(arrays_mod.Arrays(x, y, {split: np.arange(14) for split in x}), tmp_path / arrays_mod.ARRAY_FILE)
    model = models.build("ferlab_cnn", **TINY)
    paths = []
    for epoch in (1, 2, 3):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        paths.append(str(tmp_path / f"epoch-{epoch:04d}.weights.h5"))
        model.save_weights(paths[-1])
    return tmp_path, paths


def run(monkeypatch, argv):
    scored = []

    def predict_proba(model, faces, flip=False):
        scored.append(float(model.get_weights()[0].flat[0]))
        return np.eye(7)[np.zeros(len(faces), dtype=int)]

    monkeypatch.setattr(weight_average, "predict_proba", predict_proba)
    monkeypatch.setattr(sys, "argv", ["weight_average.py", *argv])
    weight_average.main()
    return scored[::2]  # one view, then flip, for each model scored


def test_windows_end_at_the_epochs_asked_and_average_theirs(epochs, monkeypatch, capsys):
    folder, paths = epochs
    options = ["--model-options", json.dumps(TINY), "--processed", str(folder)]
    scored = run(monkeypatch, [*paths, "--last", "2", "3", "--ends", "2", "3", "--no-each", *options])
    assert scored == [1.5, 2.5, 2.0]  # epochs 1-2, then 2-3 and 1-3 (epoch 2 has no window of 3)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "average of epochs 1-2 (2)",
        "average of epochs 2-3 (2)",
        "average of epochs 1-3 (3)",
    ]

    scored = run(monkeypatch, [*paths, "--last", "2", *options])  # each file, then the last window
    assert scored == [1.0, 2.0, 3.0, 2.5]


def test_an_epoch_without_a_file_is_refused(epochs, monkeypatch):
    folder, paths = epochs
    with pytest.raises(SystemExit, match="no checkpoint of epoch 5"):
        run(monkeypatch, [*paths, "--ends", "5", "--model-options", json.dumps(TINY), "--processed", str(folder)])
