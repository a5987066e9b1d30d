"""train.engine: which Keras backend runs the one trainer.

tensorflow (the default): tf.data feeds the network, tf.distribute spreads it over GPUs or
workers, op determinism gives the same model from the same seed. jax: Keras 3 on JAX, for a GPU
machine with JAX and no TensorFlow; the same network, recipe, selection, averaging and state,
with the input pipeline and the augmentation in JAX (pipeline.jax_training_batches) and one
device. Keras reads its backend once, when it is first imported: a process that trains with
`jax` chooses it (select) before anything imports Keras, as the train stage does.
"""

import contextlib
import os
import sys

from ferlab.errors import FerlabError

ENGINES = ("tensorflow", "jax")


def select(engine: str, env=os.environ, needed_by: str | None = None) -> None:
    """Make Keras, when first imported, run on `engine`; a Keras already imported on another
    backend is a clear error (the choice cannot change inside a process). needed_by: who needs it,
    as the error names it (default: train.engine)."""
    if engine not in ENGINES:
        raise FerlabError(f"train.engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if "keras" in sys.modules:
        check(engine, needed_by)
        return
    env["KERAS_BACKEND"] = engine


def check(engine: str, needed_by: str | None = None) -> None:
    import keras

    backend = keras.backend.backend()
    if backend != engine:
        who = needed_by or f"train.engine is {engine} but"
        where = "its own process" if needed_by else "its own process (python src/stages/train.py or dvc exp run)"
        raise FerlabError(
            f"{who} Keras already runs on {backend} in this process: Keras chooses its backend when first imported; "
            f"run it in {where}, or set KERAS_BACKEND={engine} before Python starts."
        )


class OneDevice:
    """What the loop needs of a tf.distribute strategy, for the JAX engine: one device, no scope."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def strategy(engine: str, me):
    """(strategy, number of GPUs) for `engine`; the JAX engine trains on one machine's first device."""
    if engine == "tensorflow":
        from ferlab.training import cluster

        return cluster.strategy(me)
    if me.multi_worker:
        raise FerlabError("TF_CONFIG names several workers, which train.engine=jax does not use: set train.engine=tensorflow.")
    import jax

    return OneDevice(), sum(device.platform == "gpu" for device in jax.devices())


def deterministic(engine: str) -> None:
    """train.deterministic: TensorFlow's op determinism. On JAX the CPU is deterministic already and
    XLA's GPU kernels are not forced (XLA_FLAGS=--xla_gpu_deterministic_ops=true does it, slower)."""
    if engine == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def describe(engine: str) -> str:
    """'tensorflow 2.21.0' or 'jax 0.10.2 on gpu:NVIDIA H100 80GB HBM3', for the log and the MLflow run."""
    if engine == "tensorflow":
        import tensorflow as tf

        return f"tensorflow {tf.__version__}"
    import jax

    device = jax.devices()[0]
    return f"jax {jax.__version__} on {device.platform}:{getattr(device, 'device_kind', device)}"
