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
