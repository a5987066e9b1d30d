"""What a user of `pip install ferlab` gets: a wheel with the pretrained models inside, installed into
a clean virtual environment, answers `ferlab detect` and the Python API from a folder that is not a
ferlab checkout, with no training and no network."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import cv2
import pytest
from conftest import REPO

from ferlab.lifecycle import pretrained

MAX_WHEEL_BYTES = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv holding only the ferlab wheel; its dependencies come from this environment's
    site-packages through a .pth line (which does not run this environment's editable install)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(REPO / "src" / "ferlab", source / "src" / "ferlab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", source],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp / "dist").glob("ferlab-*.whl")
    assert wheel.stat().st_size <= MAX_WHEEL_BYTES
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for name in pretrained.available():
        for file in pretrained.card(name)["files"]:
            assert f"ferlab/lifecycle/shipped/{name}/{file}" in names
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([venv / "bin" / "pip", "install", "--no-deps", "--no-index", "-q", wheel], check=True, capture_output=True)
    return venv


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A folder with a photo and no params.yaml, models/ or mlflow.db."""
    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image for its astronaut photo")
    cv2.imwrite(str(tmp_path / "photo.jpg"), cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    return tmp_path


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("FERLAB_MODEL", "MLFLOW_TRACKING_URI", "PYTHONPATH", "VIRTUAL_ENV")}


@pytest.mark.slow
def test_the_installed_wheel_detects_emotions_with_its_shipped_model(installed, elsewhere):
    where = subprocess.run(
        [installed / "bin" / "python", "-c", "import ferlab; print(ferlab.__file__)"],
        cwd=elsewhere,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr  # the wheel's ferlab, not the checkout's
    result = subprocess.run(
        [installed / "bin" / "ferlab", "detect", "photo.jpg", "--json"], cwd=elsewhere, env=clean_env(), capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    (photo,) = json.loads(result.stdout)
    assert photo["model"] == pretrained.default_uri() and len(photo["faces"]) == 1
    api = subprocess.run(
        [
            installed / "bin" / "python",
            "-c",
            "from ferlab import EmotionRecognizer; print([f.emotion for f in EmotionRecognizer.load().predict('photo.jpg')])",
        ],
        cwd=elsewhere,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert api.returncode == 0 and api.stdout.strip() == str([photo["faces"][0]["emotion"]]), api.stderr
