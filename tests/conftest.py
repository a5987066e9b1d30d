"""Shared fixtures: the real FER2013 archive (never downloaded) and small archives built from it."""

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SUBSET = ("happy", "sad", "neutral")  # the emotions of subset_bundle
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def archive_path() -> Path:
    return Path(os.environ.get("FERLAB_FER2013_ARCHIVE", REPO.parent / "shared" / "fer2013" / "archive.zip"))


@pytest.fixture(scope="session")
def archive() -> Path:
    path = archive_path()
    if not path.is_file():
        pytest.skip(f"needs the FER2013 archive at {path} (set FERLAB_FER2013_ARCHIVE to its path)")
    return path


@pytest.fixture(scope="session")
def archive_members(archive) -> dict[str, bytes]:
    """Four real images per (folder, emotion, split), by archive path."""
    picked: dict[str, bytes] = {}
    taken: dict[tuple, int] = {}
    with zipfile.ZipFile(archive) as zf:
        for name in sorted(zf.namelist()):
            if not name.endswith(".jpg"):
                continue
            folder, emotion, file = name.split("/")
            key = (folder, emotion, file.split("_")[0])
            if taken.get(key, 0) < 4:
                taken[key] = taken.get(key, 0) + 1
                picked[name] = zf.read(name)
    return picked


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def small_zip(tmp_path, archive_members) -> Path:
    return write_zip(tmp_path / "archive.zip", archive_members)


def csv_text(rows: list[tuple[int, np.ndarray, str]]) -> str:
    out = io.StringIO()
    out.write("emotion,pixels,Usage\n")
    for label, pixels, usage in rows:
        out.write(f"{label},{' '.join(map(str, np.asarray(pixels).ravel()))},{usage}\n")
    return out.getvalue()


@pytest.fixture
def small_csv_rows(archive_members):
    """fer2013.csv rows made from the small archive's images."""
    import cv2

    from ferlab.contract import emotion_id

    rows = []
    for name, data in archive_members.items():
        _, emotion, file = name.split("/")
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        rows.append((emotion_id(emotion), pixels, file.split("_")[0]))
    return rows


@pytest.fixture(scope="session")
def fer_faces(archive):
    """315 real FER2013 faces (15 per split and emotion) and their labels."""
    from ferlab.data.readers import read_image_archive
    from ferlab.data.table import images_of

    table = read_image_archive(archive, limit=15).table
    return images_of(table), table["label"].to_numpy()


@pytest.fixture(scope="session")
def tiny_model_path(fer_faces, tmp_path_factory) -> Path:
    """A ferlab_cnn trained for one epoch on those faces: the real format, not a judge of emotions."""
    import keras

    from ferlab.contract import normalize
    from ferlab.training import models
    from ferlab.training.model_io import save_h5

    keras.utils.set_random_seed(0)
    images, labels = fer_faces
    model = models.build("ferlab_cnn")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(normalize(images), labels, epochs=1, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("model") / "model.h5"
    save_h5(model, path)
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model_path, tmp_path_factory) -> Path:
    """A bundle as the package stage lays it out: model.h5 and its float16 model.tflite."""
    from ferlab.lifecycle.export import to_tflite
    from ferlab.training.model_io import load_h5

    bundle = tmp_path_factory.mktemp("bundle")
    (bundle / "model.h5").write_bytes(tiny_model_path.read_bytes())
    to_tflite(load_h5(tiny_model_path), bundle / "model.tflite")
    (bundle / "preprocessing.json").write_text(json.dumps({"face_margin": 0.0, "align": False}))
    return bundle


@pytest.fixture(scope="session")
def subset_bundle(tiny_model_path, tmp_path_factory) -> Path:
    """A bundle of a model for happy, sad and neutral alone, in that order (what `ferlab adapt --emotions` makes):
    the tiny model's head cut to those columns, its .h5, TFLite file and labels.json."""
    from ferlab.lifecycle.export import to_tflite
    from ferlab.training.finetune import with_emotions
    from ferlab.training.model_io import load_h5, save_h5

    bundle = tmp_path_factory.mktemp("subset_bundle")
    model = with_emotions(load_h5(tiny_model_path), [3, 4, 6])
    save_h5(model, bundle / "model.h5")
    to_tflite(model, bundle / "model.tflite")
    (bundle / "preprocessing.json").write_text(json.dumps({"face_margin": 0.0, "align": False}))
    (bundle / "labels.json").write_text(json.dumps({"emotions": [{"id": i, "name": e} for i, e in enumerate(SUBSET)]}))
    return bundle


def face_scene(face: np.ndarray, side: int = 160, size=(480, 640), at=(200, 120)) -> np.ndarray:
    """A grey frame with a FER2013 face enlarged to side x side at (x, y), its edges stretched to fill it."""
    import cv2

    x, y = at
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, y, size[0] - y - side, x, size[1] - x - side, cv2.BORDER_REPLICATE)
