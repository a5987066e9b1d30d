"""Training: data pipeline, optimiser and schedule, resumable epochs, MLflow logging.

Selection uses PublicTest only (the `val` arrays); PrivateTest is never seen here.
An interrupted run resumes from the last finished epoch: weights, optimiser state,
best-so-far and history live in `paths.train_state` until the run completes.
Under MultiWorkerMirroredStrategy (training.cluster) that state is the chief's; the other
workers keep theirs in a temporary folder and take the chief's when they start.
"""

import contextlib
import csv
import dataclasses
import hashlib
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ferlab import contract
from ferlab.config import Params, as_flat_dict
from ferlab.contract import NUM_CLASSES
from ferlab.data.arrays import Arrays
from ferlab.training import augment, cluster, precision

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")


def fingerprint(params: Params, data_digest: str, replicas: int = 1) -> str:
    """What a resumable state belongs to: the train and preprocess params, the data and, when several,
    the replicas (they set the global batch, so the steps of an epoch)."""
    # average_epochs only changes what is kept after the epochs: a run may turn it on when resumed.
    # At a constant rate the number of epochs changes none of the epochs both lengths share: a
    # constant-rate run may be made longer or shorter when resumed.
    ignored = {"average_epochs"} | ({"epochs"} if params.train.schedule == "constant" else set())
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


def _targets(faces, labels, weight_table):
    import tensorflow as tf

    targets = tf.one_hot(labels, NUM_CLASSES)
    if weight_table is not None:
        return faces, targets, tf.gather(weight_table, labels)
    return faces, targets


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int):
    """Batches of normalised faces and one-hot labels, in order (for selection and scoring)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32))).batch(batch_size)
    return ds.map(
        lambda faces, labels: _targets(tf.cast(faces[..., tf.newaxis], tf.float32) / contract.PIXEL_SCALE, labels, None),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)


def class_weight_table(weights: dict) -> list[float]:
    """The weight of each class id; the keys may be ints or, as JSON stores them, strings."""
    by_id = {int(k): float(v) for k, v in weights.items()}
    unknown = sorted(set(by_id) - set(range(NUM_CLASSES)))
    if unknown:
        raise ValueError(f"class weights for unknown class ids {unknown}")
    return [by_id.get(i, 1.0) for i in range(NUM_CLASSES)]


def make_training_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, policy, weights: dict[int, float] | None = None, start_step: int = 0
):
    """An endless stream of shuffled, augmented batches (one epoch = ceil(N / batch) of them).

    Shuffling and augmentation depend only on the seed and the batch number, so the
    stream is the same on every run, and a run resumed at `start_step` continues it.
    """
    import tensorflow as tf

    weight_table = tf.constant(class_weight_table(weights), tf.float32) if weights else None
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size).repeat().enumerate()
    ds = ds.skip(start_step)

    def prepare(step, batch):
        faces, labels = batch
        faces = tf.cast(faces[..., tf.newaxis], tf.float32) / contract.PIXEL_SCALE
        faces = augment.apply(faces, tf.stack([tf.constant(seed, tf.int64), step]), policy)
        return _targets(faces, labels, weight_table)

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def make_optimizer(cfg, steps_per_epoch: int):
    import keras

    if cfg.schedule not in ("cosine", "constant"):
        raise ValueError(f"train.schedule must be constant or cosine, not {cfg.schedule!r}")
    lr = cfg.learning_rate
    total = max(cfg.epochs * steps_per_epoch, 1)
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
    if cfg.schedule == "cosine" or warmup:
        # constant: a cosine that "decays" to 100%, after the same linear warm-up. Without it,
        # SGD at 0.05 stalled the long recipe's network at the start (README, Averaging).
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=cfg.learning_rate * 0.1 if warmup else cfg.learning_rate,
            decay_steps=total - warmup,
            alpha=0.01 if cfg.schedule == "cosine" else 1.0,
            warmup_target=cfg.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":  # Nesterov momentum; weight_decay is decoupled, as in AdamW
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay or None)
    raise ValueError(f"train.optimizer must be adam, adamw or sgd, not {cfg.optimizer!r}")


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(np.asarray(lr.numpy() if hasattr(lr, "numpy") else lr))


def model_summary(model) -> str:
    lines: list[str] = []
    model.summary(line_length=100, print_fn=lambda text, **_: lines.append(text))
    return "\n".join(lines) + "\n"


class EpochState:
    """The resumable state of one training run, on disk under `state_dir`."""

    def __init__(self, state_dir: Path, print_fn):
        self.dir = state_dir
        self.print = print_fn
        self.history_path = state_dir / "history.csv"
        self.best_path = state_dir / "best.weights.h5"
        self.average_path = state_dir / "average.npz"
        self.meta_path = state_dir / "state.json"

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
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(self.meta_path)

    def save_weights(self, model, path: Path) -> None:
        """Write weights (and optimiser state) so that a kill mid-write leaves the old file whole."""
        partial = path.with_name(path.name.replace(".weights.h5", ".partial.weights.h5"))
        model.save_weights(partial)
        partial.replace(path)

    def checkpoint(self, model, epoch: int, meta: dict) -> None:
        """The epoch's resumable state; state.json names it only once it is complete."""
        path = self.dir / f"epoch-{epoch:04d}.weights.h5"
        self.save_weights(model, path)
        meta.update(epochs_done=epoch, checkpoint=path.name)
        self.save_meta(meta)
        for old in self.dir.glob("epoch-*.weights.h5"):
            if old != path:
                old.unlink()

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
        partial = self.dir / "average.partial.npz"
        with open(partial, "wb") as f:
            np.savez(f, count=count + 1, through=epoch, **{f"w{i}": w for i, w in enumerate(weights)})
        partial.replace(self.average_path)

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
        tmp = self.history_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows({k: r[k] for k in HISTORY_FIELDS} for r in rows)
        tmp.replace(self.history_path)


def epoch_callback(state: EpochState, meta: dict, patience: int, total_epochs: int, log_metrics, average_epochs: int = 0):
    import keras

    class Callback(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            number = epoch + 1
            row = {
                "epoch": number,
                "loss": logs.get("loss"),
                "accuracy": logs.get("accuracy"),
                "val_loss": logs.get("val_loss"),
                "val_accuracy": logs.get("val_accuracy"),
                "learning_rate": current_lr(self.model.optimizer),
                "seconds": round(time.monotonic() - self.started, 1),
            }
            improved = row["val_accuracy"] > meta["best_val_accuracy"]
            if improved:
                state.save_weights(self.model, state.best_path)
                meta.update(best_val_accuracy=row["val_accuracy"], best_epoch=number)
            state.append(row)
            if number > total_epochs - average_epochs:
                state.add_to_average(self.model, number, first=total_epochs - average_epochs + 1)
            state.checkpoint(self.model, number, meta)
            log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=number)
            state.print(
                f"epoch {number}/{total_epochs}: loss {row['loss']:.4f} acc {row['accuracy']:.4f} "
                f"val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f} "
                f"lr {row['learning_rate']:.2e} {row['seconds']:.0f}s{' *best' if improved else ''}"
            )
            if number - meta["best_epoch"] >= patience:
                state.print(f"early stop: no better PublicTest accuracy for {patience} epochs")
                meta["stopped_early"] = True
                self.model.stop_training = True

    return Callback()


@dataclasses.dataclass
class TrainResult:
    model: object
    history: list[dict]
    run_id: str | None
    best_epoch: int
    best_val_accuracy: float
    precision: str
    summary: str
    averaged_epochs: int = 0  # the model is the average of this many last epochs' weights (0: the best epoch's)
    average_val_accuracy: float | None = None  # that average's PublicTest accuracy, kept or not (None: no average)
    chief: bool = True  # False on the other workers of a multi-worker run: no model, nothing to write


def train(
    params: Params,
    arrays: Arrays,
    class_weights: dict | None,
    data_digest: str,
    state_dir: Path,
    tracker=None,
    print_fn=print,
    extra_callbacks: tuple = (),
) -> TrainResult:
    """Train `params.train.model`; `tracker` (a tracking.RunTracker) receives params and metrics.
    extra_callbacks: Keras callbacks run after ferlab's own (benchmarks/time_to_accuracy.py uses one).
    With TF_CONFIG naming several workers, every worker calls this; the chief alone uses `state_dir`
    and `tracker`, and the others get a TrainResult without a model (chief=False)."""
    with kept_global_state():
        return _train(params, arrays, class_weights, data_digest, state_dir, tracker, print_fn, extra_callbacks)


@contextlib.contextmanager
def kept_global_state():
    """Training sets process-wide state: the Keras precision policy, the Python, NumPy, TensorFlow and
    Keras seeds, TensorFlow op determinism. Put it back as it was, so that later work in the process
    (other models, tests, a notebook) is not trained or drawn as this run was."""
    import keras
    import tensorflow as tf
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
    from tensorflow.python.framework import config as tf_config

    policy = keras.mixed_precision.global_policy()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    tf_seed = tf.compat.v1.random.get_seed(None)[0]
    keras_seed = global_state.get_global_attribute(GLOBAL_RANDOM_SEED)
    keras_generator = global_state.get_global_attribute(GLOBAL_SEED_GENERATOR)
    deterministic = tf_config.is_op_determinism_enabled()
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        tf.random.set_seed(tf_seed)
        global_state.set_global_attribute(GLOBAL_RANDOM_SEED, keras_seed)
        global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, keras_generator)
        (tf_config.enable_op_determinism if deterministic else tf_config.disable_op_determinism)()


def _train(params, arrays, class_weights, data_digest, state_dir, tracker, print_fn, extra_callbacks) -> TrainResult:
    import keras

    cfg = params.train
    me = cluster.role()
    keras.utils.set_random_seed(params.seed)
    if cfg.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    dist, gpus = cluster.strategy(me)
    policy = precision.resolve(cfg.precision, gpus)
    keras.mixed_precision.set_global_policy(policy)
    where = f"{me.name} of {me.workers}{' (chief)' if me.chief else ''}, " if me.multi_worker else ""
    print_fn(f"precision {policy}, {where}{dist.num_replicas_in_sync} replica(s), model {cfg.model}")

    if not me.chief:  # the chief alone writes: this worker's state is thrown away, its run is the chief's
        state_dir, tracker = Path(tempfile.mkdtemp(prefix=f"ferlab-worker-{me.index}-")), None
    try:
        return _fit(params, arrays, class_weights, data_digest, state_dir, tracker, print_fn, extra_callbacks, dist, me, policy)
    except Exception as err:
        if me.multi_worker and _collective_failed(err):
            raise cluster.lost_worker(err, me) from err
        raise
    finally:
        if not me.chief:
            shutil.rmtree(state_dir, ignore_errors=True)


def _fit(params, arrays, class_weights, data_digest, state_dir, tracker, print_fn, extra_callbacks, dist, me, policy) -> TrainResult:
    import keras

    from ferlab.training import model_io, models

    cfg = params.train
    state = EpochState(state_dir, print_fn)
    belongs_to = fingerprint(params, data_digest, dist.num_replicas_in_sync)
    meta = state.prepare(belongs_to)
    batch = cfg.batch_size * dist.num_replicas_in_sync
    steps = int(np.ceil(len(arrays.y["train"]) / batch))

    with dist.scope():
        model = models.build(cfg.model, **cfg.model_options)
        model.compile(
            optimizer=make_optimizer(cfg, steps),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
            metrics=["accuracy"],
        )
        if me.multi_worker:  # every worker creates the same variables together, before any restores one
            model.optimizer.build(model.trainable_variables)
            cluster.fit_ready(model)
    summary = model_summary(model)
    done = state.restore(model, meta)
    if me.multi_worker:
        done = cluster.follow_chief(dist, model, meta, belongs_to)
    train_ds = make_training_dataset(
        arrays.x["train"],
        arrays.y["train"],
        batch,
        params.seed,
        params.preprocess.augment,
        class_weights if cfg.class_weights else None,
        start_step=done * steps,
    )
    val_ds = make_dataset(arrays.x["val"], arrays.y["val"], batch)
    if me.multi_worker:
        train_ds, val_ds = cluster.shard_by_batch(train_ds), cluster.shard_by_batch(val_ds)

    if tracker is not None:
        meta["run_id"] = tracker.start(meta.get("run_id"))
        state.save_meta(meta)
        tracker.log_params(
            as_flat_dict({"seed": params.seed, "train": dataclasses.asdict(cfg), "preprocess": dataclasses.asdict(params.preprocess)})
            | {"train.resolved_precision": policy, "model.parameters": model.count_params()}
            | ({"train.workers": me.workers, "train.replicas": dist.num_replicas_in_sync} if me.multi_worker else {})
        )
    if done:
        print_fn(f"resuming after epoch {done} (best PublicTest accuracy so far {meta['best_val_accuracy']:.4f})")
    callbacks = [
        epoch_callback(
            state,
            meta,
            cfg.early_stopping_patience,
            cfg.epochs,
            tracker.log_metrics if tracker else (lambda *a, **k: None),
            cfg.average_epochs,
        ),
        *extra_callbacks,
    ]
    # a finished constant-rate run resumed with more epochs goes on (an early stop is final)
    if not meta.get("finished") or (meta["epochs_done"] < cfg.epochs and not meta.get("stopped_early")):
        with dist.scope() if me.multi_worker else contextlib.nullcontext():  # see cluster.fit_ready
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=cfg.epochs,
                initial_epoch=done,
                steps_per_epoch=steps,
                shuffle=False,
                callbacks=callbacks,
                verbose=0,
            )
        meta["finished"] = True
        state.save_meta(meta)
    print_fn(f"best epoch {meta['best_epoch']}: PublicTest accuracy {meta['best_val_accuracy']:.4f}")
    count, _ = state.averaged()
    average = state.average() if count else None
    if me.multi_worker:  # every worker evaluates the chief's average together
        count, average = cluster.chiefs_average(dist, count, average, model)
    kept = False
    if count:
        average_accuracy = average_val_accuracy(model, average, val_ds, dist if me.multi_worker else None)
        kept = average_accuracy > meta["best_val_accuracy"]
        print_fn(
            f"average of the last {count} epochs: PublicTest accuracy {average_accuracy:.4f}, "
            + ("kept instead of the best epoch" if kept else "not above the best epoch's: the best epoch kept")
        )
        if tracker is not None:
            tracker.log_metrics({"average_val_accuracy": average_accuracy})
    if not me.chief:
        return TrainResult(None, state.history(), None, meta["best_epoch"], meta["best_val_accuracy"], policy, summary, chief=False)
    if not kept:
        model.load_weights(state.best_path)
    # Whatever precision trained it, the model handed on computes in float32, so it loads,
    # converts to TFLite and runs on any machine.
    model = model_io.as_float32(model)
    return TrainResult(
        model,
        state.history(),
        meta.get("run_id"),
        meta["best_epoch"],
        meta["best_val_accuracy"],
        policy,
        summary,
        count if kept else 0,
        average_accuracy if count else None,
    )


def average_val_accuracy(model, average: list, val_ds, dist) -> float:
    """Put the average of the last epochs' weights into `model`; its PublicTest accuracy."""
    model.set_weights(average)
    with dist.scope() if dist is not None else contextlib.nullcontext():
        return float(model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"])


def _collective_failed(err: Exception) -> bool:
    import tensorflow as tf

    return isinstance(err, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError, tf.errors.AbortedError))
