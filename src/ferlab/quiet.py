"""Keeping framework banners out of what a user reads.

TensorFlow prints oneDNN, CUDA-stub and CPU-feature notices on import and a cuInit error on
machines with CUDA libraries but no GPU; some come from C++ before its log level applies.
LiteRT prints its XNNPACK notice whatever the level. None of them is something a user can act on.
"""

import contextlib
import logging
import os
import sys
import threading
import warnings

_STDERR_LOCK = threading.Lock()  # file descriptor 2 is the process's: one redirection at a time


@contextlib.contextmanager
def native_stderr_silenced():
    """Send what native code writes to file descriptor 2 to /dev/null for the block. Threads
    take turns, so stderr always comes back."""
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no real stderr (some embedded interpreters)
            yield
            return
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 2)
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_mlflow() -> None:
    """MLflow's advice to library authors (type hints, input examples, cloudpickle) and its
    artifact progress bars: nothing a user of ferlab can act on."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    for chatty in ("mlflow.store.db.utils", "alembic", "mlflow.pyfunc", "mlflow.models.model"):
        logging.getLogger(chatty).setLevel(logging.ERROR)


def import_tensorflow():
    """`import tensorflow` (and Keras) without the banners; the module."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # later C++ notices, cuInit's error included
        with native_stderr_silenced():
            import keras  # noqa: F401  (imports tensorflow as its backend)
            import tensorflow  # noqa: F401
        # Keras' "HDF5 is legacy" advice: the .h5 file is this project's deliverable, by design.
        logging.getLogger("absl").setLevel(logging.ERROR)
    return sys.modules["tensorflow"]
