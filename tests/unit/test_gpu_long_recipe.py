"""benchmarks/gpu_long_recipe.py's JAX trainer refuses a recipe it cannot train (run here without JAX or a GPU)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def train(*overrides: str) -> subprocess.CompletedProcess:
    args = [sys.executable, str(REPO / "benchmarks/gpu_long_recipe.py"), "train", "--out", "unused", "--data", "unused"]
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}  # stops right after the params check
    return subprocess.run(args + [a for o in overrides for a in ("-S", o)], cwd=REPO, env=env, capture_output=True, text=True)


def test_low_resolution_faces_are_refused_with_one_sentence_and_pinning_them_off_passes_the_check():
    refused = train("preprocess.augment.low_resolution_probability=0.15")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "The JAX trainer has no low-resolution augmentation: add -S preprocess.augment.low_resolution_probability=0."
    )
    pinned = train("preprocess.augment.low_resolution_probability=0")
    assert pinned.returncode != 0 and "low-resolution" not in pinned.stderr
    assert "run train with KERAS_BACKEND=jax" in pinned.stderr  # the next check, so the params one let it through


def test_the_epoch_count_fits_the_seconds_left_and_never_drops_below_the_epochs_done():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu_long_recipe import epochs_fitting

    # two runs sharing an H100: epochs 3-5 took 1.2 s each, 420 s - 20 s of recompilation left after epoch 5
    assert epochs_fitting(400.0, 1.2, 5) == 5 + 333
    assert epochs_fitting(-3.0, 1.2, 5) == 5  # past the budget already: no more epochs
    assert epochs_fitting(0.5, 1.2, 1) == 1
