"""A throw-away copy of the project (git + DVC) with params for a small slice of the real data."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", "src", "data/external/README.md")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc, seconds: float = 120) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds}s")


def run(cmd, cwd, env, check=True, timeout=900):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def project_env(root: Path) -> dict:
    # TF_CPP_*: the project must keep TensorFlow's banners out of its output by itself
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "TF_CPP_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "ferlab-test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@ferlab"
    return env


def set_params(root: Path, **changes) -> None:
    """changes: 'section.key' = value."""
    path = root / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def project(tmp_path, archive):
    root = tmp_path / "project"
    root.mkdir()
    for name in PROJECT_FILES:
        src = REPO / name
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    # a relative candidate, as params.yaml has: `dvc exp run --temp` must find it from the project root
    set_params(
        root,
        **{
            "fetch.candidates": [os.path.relpath(archive, root)],
            "fetch.limit_per_class": 12,
            "train.epochs": 2,
            "train.batch_size": 32,
            "evaluate.example_faces": 8,
            # 84 test faces: one changed answer is 1.2 points
            "package.max_tflite_drop": 0.05,
        },
    )
    env = project_env(root)
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    run(["dvc", "config", "core.analytics", "false"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "slice project"], root, env)
    return root, env
