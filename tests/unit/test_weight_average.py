"""train.average_epochs: the running mean of the last epochs' weights, kept across an interruption,
and handed on instead of the best epoch only when its PublicTest accuracy is higher."""

import dataclasses

import keras
import numpy as np
import pytest

from ferlab.config import Params, Train
from ferlab.data.arrays import Arrays
from ferlab.training import train as train_mod
from ferlab.training.state import EpochState, fingerprint
from ferlab.training.train import train

TINY = {"widths": [4, 4, 4, 4], "depths": [1, 1, 1, 1], "dense": 8}


def tiny_params(**train_options) -> Params:
    options = {"model_options": TINY, "epochs": 4, "batch_size": 16, "optimizer": "sgd", "learning_rate": 0.05}
    return Params(train=Train(**(options | {"precision": "float32"} | train_options)))


def tiny_arrays() -> Arrays:
    rng = np.random.default_rng(0)
    x = {split: rng.integers(0, 256, (n, 48, 48), dtype=np.uint8) for split, n in (("train", 48), ("val", 32))}
    y = {split: np.arange(len(x[split])) % 7 for split in x}
    return Arrays(x, y, {})


class Recorder(keras.callbacks.Callback):
    """The weights at the end of each epoch (after ferlab's own callback), by epoch number."""

    def __init__(self, stop_after: int | None = None):
        super().__init__()
        self.weights, self.stop_after = {}, stop_after

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch + 1] = self.model.get_weights()
        if epoch + 1 == self.stop_after:
            raise KeyboardInterrupt  # as Ctrl+C between epochs


def run(params, state_dir, callbacks=()):
    return train(params, tiny_arrays(), None, "digest", state_dir, print_fn=lambda _: None, extra_callbacks=callbacks)


def test_the_average_is_the_mean_of_the_last_epochs_and_an_interrupted_run_ends_with_the_same(tmp_path):
    params = tiny_params(average_epochs=2)
    whole = Recorder()
    result = run(params, tmp_path / "whole", (whole,))
    state = EpochState(tmp_path / "whole", print)
    assert state.averaged() == (2, 4)
    expected = [(a + b) / 2 for a, b in zip(whole.weights[3], whole.weights[4])]
    for got, want in zip(state.average(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert result.average_val_accuracy is not None

    cut = Recorder(stop_after=3)
    with pytest.raises(KeyboardInterrupt):  # stopped after epoch 3, the first averaged one
        run(params, tmp_path / "cut", (cut,))
    assert EpochState(tmp_path / "cut", print).averaged() == (1, 3)
    rest = Recorder()
    resumed = run(params, tmp_path / "cut", (rest,))
    assert sorted(rest.weights) == [4]  # resumed after epoch 3
    state = EpochState(tmp_path / "cut", print)
    assert state.averaged() == (2, 4)
    for got, a, b in zip(state.average(), cut.weights[3], rest.weights[4], strict=True):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-7)
    assert resumed.average_val_accuracy is not None


def test_an_epoch_run_again_is_not_counted_twice(tmp_path):
    state = EpochState(tmp_path, print)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    first = model.get_weights()
    state.add_to_average(model, 3)
    model.set_weights([w + 1 for w in first])
    state.add_to_average(model, 3)  # epoch 3 again, after an interruption: already in
    assert state.averaged() == (1, 3)
    state.add_to_average(model, 4)
    assert state.averaged() == (2, 4)
    for got, w in zip(state.average(), first):
        np.testing.assert_allclose(got, w + 0.5)


@pytest.mark.parametrize(
    "average_accuracy, kept, precision",
    [(1.0, True, "float32"), (0.0, False, "float32"), (1.0, True, "mixed_bfloat16")],  # bf16: what AMX/AVX512-BF16 CPUs train in
)
def test_the_average_is_handed_on_only_when_publictest_prefers_it(tmp_path, monkeypatch, average_accuracy, kept, precision):
    real = train_mod.average_val_accuracy

    def scored(model, average, val_ds, dist):
        real(model, average, val_ds, dist)  # puts the average into the model
        return average_accuracy

    monkeypatch.setattr(train_mod, "average_val_accuracy", scored)
    recorder = Recorder()
    result = run(tiny_params(average_epochs=3, precision=precision), tmp_path, (recorder,))
    assert result.precision == precision
    assert {layer.compute_dtype for layer in result.model.layers if layer.weights} == {"float32"}  # handed on in float32
    assert result.averaged_epochs == (3 if kept else 0) and result.average_val_accuracy == average_accuracy
    average = [np.mean([recorder.weights[e][i] for e in (2, 3, 4)], axis=0) for i in range(len(recorder.weights[4]))]
    best = recorder.weights[result.best_epoch]
    for got, want in zip(result.model.get_weights(), average if kept else best, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_turning_averaging_on_keeps_an_interrupted_run_resumable():
    off, on = tiny_params(), tiny_params(average_epochs=10)
    assert fingerprint(off, "digest") == fingerprint(on, "digest")
    assert fingerprint(off, "digest") != fingerprint(dataclasses.replace(off, seed=7), "digest")


def test_a_constant_rate_run_may_be_resumed_with_other_epochs_and_a_cosine_run_may_not():
    constant = tiny_params(schedule="constant", epochs=120)
    assert fingerprint(constant, "digest") == fingerprint(
        dataclasses.replace(constant, train=dataclasses.replace(constant.train, epochs=100)), "digest"
    )
    cosine = tiny_params(schedule="cosine", epochs=120)
    assert fingerprint(cosine, "digest") != fingerprint(
        dataclasses.replace(cosine, train=dataclasses.replace(cosine.train, epochs=100)), "digest"
    )


def test_a_finished_constant_rate_run_given_more_epochs_goes_on_and_averages_its_new_last_epochs(tmp_path):
    run(tiny_params(schedule="constant", epochs=3, average_epochs=2), tmp_path)
    assert EpochState(tmp_path, print).averaged() == (2, 3)
    more = Recorder()
    longer = run(tiny_params(schedule="constant", epochs=5, average_epochs=2), tmp_path, (more,))
    assert sorted(more.weights) == [4, 5]  # went on after epoch 3, not from the start
    state = EpochState(tmp_path, print)
    assert state.averaged() == (2, 5)  # epochs 4 and 5: the mean begun at epoch 2 started again
    for got, a, b in zip(state.average(), more.weights[4], more.weights[5], strict=True):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-7)
    assert [int(r["epoch"]) for r in state.history()] == [1, 2, 3, 4, 5]
    assert longer.average_val_accuracy is not None


def test_a_run_stopped_early_stays_stopped_when_given_more_epochs(tmp_path, monkeypatch):
    params = tiny_params(schedule="constant", epochs=6, early_stopping_patience=1)
    stopped = run(params, tmp_path)
    done = EpochState(tmp_path, print).history()
    assert len(done) < 6, "the tiny model should stop early on random labels"
    again = Recorder()
    run(dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=9)), tmp_path, (again,))
    assert again.weights == {} and stopped.best_epoch < 6


def test_without_averaging_there_is_no_average(tmp_path):
    result = run(tiny_params(epochs=2), tmp_path)
    assert result.averaged_epochs == 0 and result.average_val_accuracy is None
    assert not (tmp_path / "average.npz").exists()


def test_the_model_card_says_which_weights_the_model_holds():
    from ferlab.lifecycle.model_card import kept_weights

    assert kept_weights({"best_epoch": 44, "epochs_run": 45}) == "best epoch 44 of 45"  # run.json before averaging existed
    assert kept_weights({"best_epoch": 44, "epochs_run": 45, "averaged_epochs": 0}) == "best epoch 44 of 45"
    averaged = {"best_epoch": 44, "epochs_run": 45, "averaged_epochs": 5}
    assert kept_weights(averaged) == "the average of epochs 41-45 of 45, kept over best epoch 44 by PublicTest accuracy"
