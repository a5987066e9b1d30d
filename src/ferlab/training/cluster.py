"""Training on several machines: the worker's role from TF_CONFIG, the strategy, and what the workers share.

TF_CONFIG naming more than one task (`chief` and `worker` jobs) trains with
MultiWorkerMirroredStrategy: every worker runs the same training in lockstep and the
gradients are summed over all of them. The chief (the `chief` task, else worker 0) alone
writes: its resumable state, the model, the reports and the MLflow run.
"""

import json
import os
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Mapping

from ferlab.errors import FerlabError

JOBS = ("chief", "worker")
TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "FERLAB_WORKER_TIMEOUT", 600.0


@dataclass(frozen=True)
class Role:
    addresses: tuple[str, ...] = ()  # host:port of every task that trains, the chief's first
    index: int = 0  # this task's place among them
    name: str = "worker 0"  # as TF_CONFIG names it: its job and index there

    @property
    def workers(self) -> int:
        return max(len(self.addresses), 1)

    @property
    def chief(self) -> bool:
        return self.index == 0

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1


def role(env: Mapping[str, str] = os.environ) -> Role:
    """This process's role in the cluster TF_CONFIG describes; one process alone without it."""
    text = env.get("TF_CONFIG", "").strip()
    if not text:
        return Role()
    try:
        config = json.loads(text)
        cluster, task = config.get("cluster") or {}, config.get("task") or {}
        kind, index = task.get("type"), task.get("index", 0)
        if not isinstance(cluster, dict):
            raise ValueError(cluster)
    except (ValueError, AttributeError):
        example = '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
        raise FerlabError(f"TF_CONFIG is not a JSON object like {example}.") from None
    others = sorted(set(cluster) - set(JOBS))
    if others:
        raise FerlabError(f"TF_CONFIG names {', '.join(others)} tasks; ferlab trains on `chief` and `worker` tasks only.")
    if not all(isinstance(cluster[job], list) for job in cluster):
        raise FerlabError("TF_CONFIG: each job in `cluster` must be a list of host:port addresses.")
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        jobs = ", ".join(f"{len(tasks)} {job}" for job, tasks in cluster.items())
        raise FerlabError(f"TF_CONFIG: task {kind!r} {index!r} is not in its cluster ({jobs}).")
    addresses = tuple(str(a) for job in JOBS for a in cluster.get(job, []))
    if not all(re.fullmatch(r"[^\s:]+:\d+|\[[0-9a-fA-F:]+\]:\d+", a) for a in addresses):
        raise FerlabError(f"TF_CONFIG: every address in `cluster` must be host:port, not {', '.join(addresses)}.")
    place = index if kind == "chief" else len(cluster.get("chief", [])) + index
    return Role(addresses=addresses, index=place, name=f"{kind} {index}")


def join_timeout(env: Mapping[str, str] = os.environ) -> float:
    value = env.get(TIMEOUT_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise FerlabError(f"{TIMEOUT_ENV} must be a number of seconds, not {value!r}.") from None
    if seconds <= 0:
        raise FerlabError(f"{TIMEOUT_ENV} must be a positive number of seconds, not {value!r}.")
    return seconds


def wait_for_workers(me: Role, seconds: float) -> None:
    """Answer on this worker's port until every other worker's port answers. TensorFlow waits for a
    missing worker without a limit (and without letting Python stop it), so it starts only then."""
    port = int(me.addresses[me.index].rpartition(":")[2])
    others = [a for i, a in enumerate(me.addresses) if i != me.index]
    deadline = time.monotonic() + seconds
    dual = socket.has_dualstack_ipv6()
    try:
        server = socket.create_server(("", port), family=socket.AF_INET6 if dual else socket.AF_INET, dualstack_ipv6=dual)
    except OSError as err:
        raise FerlabError(f"{me.name} cannot listen on port {port} from TF_CONFIG ({err.strerror}); give it a free port.") from None
    with server:  # the kernel completes the others' connections: no accept needed
        while others:
            host, _, peer_port = others[0].rpartition(":")
            try:
                socket.create_connection((host.strip("[]"), int(peer_port)), timeout=2).close()
                others.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    raise FerlabError(
                        f"{others[0]} (in TF_CONFIG) did not answer within {seconds:.0f} s; start every worker, "
                        f"or wait longer with {TIMEOUT_ENV}=<seconds>."
                    ) from None
                time.sleep(0.5)


def strategy(me: Role):
    """MultiWorkerMirroredStrategy for several workers; MirroredStrategy over several GPUs of this
    machine; the default (one device) strategy otherwise. Also the number of GPUs here."""
    import tensorflow as tf

    if me.multi_worker:
        wait_for_workers(me, join_timeout())
        dist = tf.distribute.MultiWorkerMirroredStrategy()
        if threading.current_thread() is threading.main_thread():  # TensorFlow's preemption notifier swallows SIGTERM
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # `kill` stops a worker, as it stops one process training
        return dist, len(tf.config.list_logical_devices("GPU"))
    gpus = tf.config.list_logical_devices("GPU")
    return (tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()), len(gpus)


def shard_by_batch(ds):
    """Each worker takes its part of every global batch (the dataset is made from arrays, not files)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def fit_ready(model) -> None:
    """Let Keras 3's fit() run under MultiWorkerMirroredStrategy (keras-team/keras#20585). Its first-batch
    build averages a batch across workers, which collective ops cannot do with a tuple: the model is built
    already, so that build is skipped, and fit() must then run inside the strategy's scope. Each step's
    scalar logs are averaged along an axis they lack: they get one (fit reports the epoch's metrics from
    its metric variables, summed over all workers, anyway)."""
    model._distribute_strategy = None
    model.train_step = _with_axis(model.train_step)
    model.test_step = _with_axis(model.test_step)


def _with_axis(step):
    import tensorflow as tf

    return lambda data: {name: tf.reshape(value, [1]) for name, value in step(data).items()}


def _sum(dist, tensors: list, chief_only: bool) -> list:
    """The sum over all workers of each tensor (in float64), or with `chief_only` the chief's alone."""
    import tensorflow as tf

    @tf.function
    def add_up():
        context = tf.distribute.get_replica_context()
        keep = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), tf.float64) if chief_only else tf.constant(1.0, tf.float64)
        return context.all_reduce("sum", [tf.cast(t, tf.float64) * keep for t in tensors])

    return [dist.experimental_local_results(t)[0] for t in dist.run(add_up)]


def follow_chief(dist, model, meta: dict, fingerprint_: str) -> int:
    """Every worker continues from the chief's state: the same params and data (checked), the epochs done,
    the best epoch so far and, when the chief resumes, its weights and optimiser state. The epochs done."""
    import numpy as np
    import tensorflow as tf

    keys = ("epochs_done", "best_epoch", "best_val_accuracy", "finished", "stopped_early")
    mine = [int(fingerprint_[i : i + 4], 16) for i in range(0, 16, 4)] + [float(meta.get(k) or 0) for k in keys]
    (chiefs,) = _sum(dist, [tf.constant(mine, tf.float64)], chief_only=True)
    chiefs = chiefs.numpy().tolist()
    (differing,) = _sum(dist, [tf.constant(float(chiefs[:4] != mine[:4]))], chief_only=False)
    if differing.numpy():
        raise FerlabError(f"params.yaml or the data differ between the chief and {int(differing.numpy())} worker(s); make them the same.")
    done, best_epoch, best_val_accuracy, finished, stopped_early = chiefs[4:]
    meta.update(
        epochs_done=int(done),
        best_epoch=int(best_epoch),
        best_val_accuracy=best_val_accuracy,
        finished=bool(finished),
        stopped_early=bool(stopped_early),
    )
    if done:
        variables = model.variables + model.optimizer.variables
        for variable, value in zip(variables, _sum(dist, variables, chief_only=True)):
            variable.assign(np.asarray(value).astype(variable.dtype))
    return int(done)


def chiefs_average(dist, count: int, average: list | None, model) -> tuple[int, list | None]:
    """The chief's running average of the last epochs' weights, on every worker (a worker started
    again during the averaged epochs holds only part of it): (epochs averaged, weights or None)."""
    import numpy as np
    import tensorflow as tf

    (chiefs_count,) = _sum(dist, [tf.constant(float(count), tf.float64)], chief_only=True)
    chiefs_count = int(chiefs_count.numpy())
    if not chiefs_count:
        return 0, None
    mine = average if average is not None else [np.zeros_like(w) for w in model.get_weights()]
    weights = _sum(dist, [tf.constant(w) for w in mine], chief_only=True)
    return chiefs_count, [np.asarray(w).astype(m.dtype) for w, m in zip(weights, mine)]


def lost_worker(error: Exception, me: Role) -> FerlabError:
    """The one-sentence error for a collective that failed because another worker went away."""
    tasks = sorted({f"{job} {task}" for job, task in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", str(error))} - {me.name})
    who = " and ".join(tasks) if tasks else "another worker"
    return FerlabError(f"{who} stopped answering; start all workers again with the same TF_CONFIG to resume from the last finished epoch.")
