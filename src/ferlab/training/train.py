"""The trainer: one loop for the recipe of params.yaml's `train` section, its selection and MLflow logging.

Selection uses PublicTest only (the `val` arrays); PrivateTest is never seen here. The pieces it
puts together live beside it: the input pipeline (pipeline), the optimiser and its schedule
(schedule), the resumable state (state), the Keras backend that runs it (engine: train.engine,
TensorFlow or JAX, the same recipe either way). An interrupted run resumes from the last finished epoch:
weights, optimiser state, best-so-far and history live in `paths.train_state` until the run completes.
Under MultiWorkerMirroredStrategy (training.cluster) that state is the chief's; the other
workers keep theirs in a temporary folder and take the chief's when they start.
"""

import contextlib
import dataclasses
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ferlab.config import Params, as_flat_dict
from ferlab.data.arrays import Arrays
from ferlab.errors import FerlabError
from ferlab.training import cluster, engine, precision
from ferlab.training.pipeline import feeds
from ferlab.training.schedule import current_lr, make_optimizer
from ferlab.training.state import EpochState, fingerprint


def model_summary(model) -> str:
    lines: list[str] = []
    model.summary(line_length=100, print_fn=lambda text, **_: lines.append(text))
    return "\n".join(lines) + "\n"


def epoch_callback(state: EpochState, meta: dict, patience: int, total_epochs: int, log_metrics, average_epochs: int = 0):
    """After every epoch: its history row, the best epoch's weights, the running average, the
    resumable checkpoint, the epoch's metrics to MLflow, and the early stop."""
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
    (other models, tests, a notebook) is not trained or drawn as this run was. TensorFlow's own state
    only where Keras runs on it (the JAX engine needs no TensorFlow)."""
    import keras
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED

    on_tensorflow = keras.backend.backend() == "tensorflow"
    if on_tensorflow:
        import tensorflow as tf
        from tensorflow.python.framework import config as tf_config

        tf_seed = tf.compat.v1.random.get_seed(None)[0]
        deterministic = tf_config.is_op_determinism_enabled()
    policy = keras.mixed_precision.global_policy()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    keras_seed = global_state.get_global_attribute(GLOBAL_RANDOM_SEED)
    keras_generator = global_state.get_global_attribute(GLOBAL_SEED_GENERATOR)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        global_state.set_global_attribute(GLOBAL_RANDOM_SEED, keras_seed)
        global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, keras_generator)
        if on_tensorflow:
            tf.random.set_seed(tf_seed)
            (tf_config.enable_op_determinism if deterministic else tf_config.disable_op_determinism)()


@dataclasses.dataclass
class _Run:
    """One training run's settings and places: what every step of the loop below shares."""

    params: Params
    state: EpochState
    meta: dict
    fingerprint: str
    tracker: object
    print: object
    dist: object  # the tf.distribute strategy (engine.OneDevice for JAX)
    me: cluster.Role
    policy: str  # the resolved precision

    @property
    def cfg(self):
        return self.params.train

    @property
    def replicas(self) -> int:
        return self.dist.num_replicas_in_sync


def _train(params, arrays, class_weights, data_digest, state_dir, tracker, print_fn, extra_callbacks) -> TrainResult:
    import keras

    cfg = params.train
    engine.check(cfg.engine)
    me = cluster.role()
    keras.utils.set_random_seed(params.seed)
    if cfg.deterministic:
        engine.deterministic(cfg.engine)
    dist, gpus = engine.strategy(cfg.engine, me)
    policy = precision.resolve(cfg.precision, gpus)
    keras.mixed_precision.set_global_policy(policy)
    where = f"{me.name} of {me.workers}{' (chief)' if me.chief else ''}, " if me.multi_worker else ""
    on = "" if cfg.engine == "tensorflow" else f"{engine.describe(cfg.engine)}, "
    print_fn(f"precision {policy}, {on}{where}{dist.num_replicas_in_sync} replica(s), model {cfg.model}")

    if not me.chief:  # the chief alone writes: this worker's state is thrown away, its run is the chief's
        state_dir, tracker = Path(tempfile.mkdtemp(prefix=f"ferlab-worker-{me.index}-")), None
    try:
        state = EpochState(state_dir, print_fn)
        belongs_to = fingerprint(params, data_digest, dist.num_replicas_in_sync)
        run = _Run(params, state, state.prepare(belongs_to), belongs_to, tracker, print_fn, dist, me, policy)
        return _fit(run, arrays, class_weights, extra_callbacks)
    except Exception as err:
        if me.multi_worker and _collective_failed(err):
            raise cluster.lost_worker(err, me) from err
        raise
    finally:
        if not me.chief:
            shutil.rmtree(state_dir, ignore_errors=True)


def _fit(run: _Run, arrays: Arrays, class_weights: dict | None, extra_callbacks: tuple) -> TrainResult:
    cfg, meta = run.cfg, run.meta
    batch = cfg.batch_size * run.replicas
    steps = int(np.ceil(len(arrays.y["train"]) / batch))
    model = _compiled_model(run, steps)
    summary = model_summary(model)
    done = run.state.restore(model, meta)
    if run.me.multi_worker:
        done = cluster.follow_chief(run.dist, model, meta, run.fingerprint)
    train_ds, val_ds = _feeds(run, arrays, class_weights, batch, start_step=done * steps)
    _start_tracking(run, model)
    if done:
        run.print(f"resuming after epoch {done} (best PublicTest accuracy so far {meta['best_val_accuracy']:.4f})")
    callbacks = [
        epoch_callback(
            run.state,
            meta,
            cfg.early_stopping_patience,
            cfg.epochs,
            run.tracker.log_metrics if run.tracker else (lambda *a, **k: None),
            cfg.average_epochs,
        ),
        *extra_callbacks,
    ]
    # a finished constant-rate run resumed with more epochs goes on (an early stop is final)
    if not meta.get("finished") or (meta["epochs_done"] < cfg.epochs and not meta.get("stopped_early")):
        if meta.get("checkpoint_dropped"):
            raise FerlabError(
                f"the training state in {run.state.dir} was carried without its last checkpoint (ferlab.training.carry): "
                f"it hands on the model of its {meta['epochs_done']} epochs, not more; set train.epochs={meta['epochs_done']}."
            )
        with run.dist.scope() if run.me.multi_worker else contextlib.nullcontext():  # see cluster.fit_ready
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
        run.state.save_meta(meta)
    run.print(f"best epoch {meta['best_epoch']}: PublicTest accuracy {meta['best_val_accuracy']:.4f}")
    return _kept(run, model, val_ds, summary)


def _compiled_model(run: _Run, steps: int):
    """The network of train.model, compiled with the recipe's optimiser, schedule and loss."""
    import keras

    from ferlab.training import models

    cfg = run.cfg
    with run.dist.scope():
        model = models.build(cfg.model, **cfg.model_options)
        model.compile(
            optimizer=make_optimizer(cfg, steps),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
            metrics=["accuracy"],
        )
        if run.me.multi_worker:  # every worker creates the same variables together, before any restores one
            model.optimizer.build(model.trainable_variables)
            cluster.fit_ready(model)
    return model


def _feeds(run: _Run, arrays: Arrays, class_weights: dict | None, batch: int, start_step: int):
    """The endless augmented Training stream (from `start_step` on) and the PublicTest batches."""
    weights = class_weights if run.cfg.class_weights else None
    train_ds, val_ds = feeds(run.cfg.engine, arrays, batch, run.params.seed, run.params.preprocess.augment, weights, start_step)
    if run.me.multi_worker:
        train_ds, val_ds = cluster.shard_by_batch(train_ds), cluster.shard_by_batch(val_ds)
    return train_ds, val_ds


def _start_tracking(run: _Run, model) -> None:
    """The MLflow run: the state's own when resumed; a new one that also gets the epochs of a state trained
    without a tracker (ferlab.training.carry, on a machine without MLflow)."""
    if run.tracker is None:
        return
    untracked = run.state.history() if run.meta.get("run_id") is None else []
    run.meta["run_id"] = run.tracker.start(run.meta.get("run_id"))
    run.state.save_meta(run.meta)
    params, me = run.params, run.me
    run.tracker.log_params(
        as_flat_dict({"seed": params.seed, "train": dataclasses.asdict(run.cfg), "preprocess": dataclasses.asdict(params.preprocess)})
        | {"train.resolved_precision": run.policy, "model.parameters": model.count_params()}
        | ({"train.workers": me.workers, "train.replicas": run.replicas} if me.multi_worker else {})
    )
    for row in untracked:
        run.tracker.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))


def _kept(run: _Run, model, val_ds, summary: str) -> TrainResult:
    """Selection: the best epoch's weights, or the average of the last epochs where PublicTest prefers it."""
    from ferlab.training import model_io

    meta, state, me = run.meta, run.state, run.me
    count, _ = state.averaged()
    average = state.average() if count else None
    if me.multi_worker:  # every worker evaluates the chief's average together
        count, average = cluster.chiefs_average(run.dist, count, average, model)
    kept = False
    if count:
        average_accuracy = average_val_accuracy(model, average, val_ds, run.dist if me.multi_worker else None)
        kept = average_accuracy > meta["best_val_accuracy"]
        run.print(
            f"average of the last {count} epochs: PublicTest accuracy {average_accuracy:.4f}, "
            + ("kept instead of the best epoch" if kept else "not above the best epoch's: the best epoch kept")
        )
        if run.tracker is not None:
            run.tracker.log_metrics({"average_val_accuracy": average_accuracy})
    if not me.chief:
        return TrainResult(None, state.history(), None, meta["best_epoch"], meta["best_val_accuracy"], run.policy, summary, chief=False)
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
        run.policy,
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
