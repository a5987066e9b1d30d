"""Resumable training state: what a state belongs to (its fingerprint) and the files of one run.

An interrupted run resumes from the last finished epoch: weights, optimiser state, best-so-far,
the running weight average and the history live under one folder until the run completes. Every
file is written beside its place and moved over it (fileio.atomic_path), so a kill mid-write
leaves the previous file whole.
"""

import csv
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from ferlab.config import Params
from ferlab.fileio import atomic_path

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")


def fingerprint(params: Params, data_digest: str, replicas: int = 1) -> str:
    """What a resumable state belongs to: the train and preprocess params, the data and, when several,
    the replicas (they set the global batch, so the steps of an epoch)."""
    # average_epochs only changes what is kept after the epochs: a run may turn it on when resumed.
    # At a constant rate the number of epochs changes none of the epochs both lengths share: a
    # constant-rate run may be made longer or shorter when resumed.
    ignored = {"average_epochs"} | ({"epochs"} if params.train.schedule == "constant" else set())
    ignored |= {"engine"} if params.train.engine == "tensorflow" else set()  # a state from before the key still resumes
    train = {k: v for k, v in dataclasses.asdict(params.train).items() if k not in ignored}
    content = {
        "train": train,
        "preprocess": dataclasses.asdict(params.preprocess),
        "seed": params.seed,
        "data": data_digest,
    }
    if replicas > 1:
        content["replicas"] = replicas
    payload = json.dumps(content, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class EpochState:
    """The resumable state of one training run, on disk under `state_dir`."""

    def __init__(self, state_dir: Path, print_fn):
        self.dir = Path(state_dir)
        self.print = print_fn
        self.history_path = self.dir / "history.csv"
        self.best_path = self.dir / "best.weights.h5"
        self.average_path = self.dir / "average.npz"
        self.meta_path = self.dir / "state.json"

    def prepare(self, fingerprint_: str) -> dict:
        """Load a matching state, or start fresh (a state for other params or data is discarded)."""
        if self.meta_path.is_file():
            meta = json.loads(self.meta_path.read_text())
            if meta.get("fingerprint") == fingerprint_:
                return meta
            self.print("params or data changed since the interrupted run: starting over")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        meta = {
            "fingerprint": fingerprint_,
            "run_id": None,
            "best_val_accuracy": -1.0,
            "best_epoch": 0,
            "epochs_done": 0,
            "checkpoint": None,
        }
        self.save_meta(meta)
        return meta

    def save_meta(self, meta: dict) -> None:
        with atomic_path(self.meta_path) as staged:
            staged.write_text(json.dumps(meta))

    def save_weights(self, model, path: Path) -> None:
        """Write weights (and optimiser state) so that a kill mid-write leaves the old file whole."""
        with atomic_path(path) as staged:  # the staged name keeps `path`'s, which Keras needs (.weights.h5)
            model.save_weights(staged)

    def checkpoint(self, model, epoch: int, meta: dict) -> None:
        """The epoch's resumable state; state.json names it only once it is complete."""
        path = self.dir / f"epoch-{epoch:04d}.weights.h5"
        self.save_weights(model, path)
        meta.update(epochs_done=epoch, checkpoint=path.name)
        self.save_meta(meta)
        for old in self.dir.glob("epoch-*.weights.h5"):
            if old != path:
                old.unlink()

    def drop_checkpoint(self, meta: dict) -> None:
        """A finished run's state without its last epoch's checkpoint (the weights and the optimiser state):
        the best epoch, the average and the history still hand the model on, a third smaller to carry
        (ferlab.training.carry); more epochs can no longer follow."""
        if not meta.get("finished") or not meta.get("checkpoint"):
            return
        name = meta["checkpoint"]
        meta.update(checkpoint=None, checkpoint_dropped=True)
        self.save_meta(meta)
        (self.dir / name).unlink(missing_ok=True)

    def restore(self, model, meta: dict) -> int:
        """Load the last complete epoch into `model`; the number of epochs already done."""
        if not meta.get("checkpoint"):
            return 0
        if not model.optimizer.built:  # its state is in the file too
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.dir / meta["checkpoint"])
        return meta["epochs_done"]

    def averaged(self) -> tuple[int, int]:
        """(epochs in the running average, the last of them); (0, 0) before the first."""
        if not self.average_path.is_file():
            return 0, 0
        with np.load(self.average_path) as saved:
            return int(saved["count"]), int(saved["through"])

    def add_to_average(self, model, epoch: int, first: int = 1) -> None:
        """Fold the model's weights (batch-norm statistics too) into the running mean of the epochs
        averaged so far, from epoch `first` on; an epoch run again after an interruption is not counted
        twice, and a mean begun before `first` (a run resumed with more epochs) starts again."""
        count, through = self.averaged()
        if count and through - count + 1 < first:
            count, through = 0, 0
        if epoch <= through:
            return
        weights = model.get_weights()
        if count:
            weights = [m + (w - m) / (count + 1) for m, w in zip(self.average(), weights)]
        with atomic_path(self.average_path) as staged, open(staged, "wb") as f:
            np.savez(f, count=count + 1, through=epoch, **{f"w{i}": w for i, w in enumerate(weights)})

    def average(self) -> list[np.ndarray]:
        with np.load(self.average_path) as saved:
            return [saved[f"w{i}"] for i in range(len(saved.files) - 2)]

    def history(self) -> list[dict]:
        if not self.history_path.is_file():
            return []
        with open(self.history_path) as f:
            return list(csv.DictReader(f))

    def append(self, row: dict) -> None:
        """Add an epoch's row; an epoch re-run after an interruption replaces its old row."""
        rows = [r for r in self.history() if int(r["epoch"]) < row["epoch"]] + [row]
        with atomic_path(self.history_path) as staged, open(staged, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows({k: r[k] for k in HISTORY_FIELDS} for r in rows)
