"""A small set of real photos for the batch and Spark tests: scikit-image's astronaut, framed four
ways (BlazeFace finds one face in each), a wall with no face, and two files that are no images."""

from pathlib import Path

import cv2
import numpy as np
import pytest

FACES = ("astronaut.jpg", "mirrored.jpg", "small.png", "scene.jpg")
NO_FACE = "wall.png"
UNREADABLE = ("notes.jpg", "empty.jpg")


def write_photos(folder: Path) -> Path:
    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image for its astronaut photo")
    photo = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "astronaut.jpg"), photo)
    cv2.imwrite(str(folder / "mirrored.jpg"), photo[:, ::-1])
    cv2.imwrite(str(folder / "small.png"), cv2.resize(photo, (320, 320), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(folder / "scene.jpg"), cv2.copyMakeBorder(photo, 40, 0, 100, 60, cv2.BORDER_CONSTANT, value=(40, 40, 40)))
    cv2.imwrite(str(folder / NO_FACE), np.full((300, 400), 120, np.uint8))
    (folder / "notes.jpg").write_text("not an image\n")
    (folder / "empty.jpg").write_bytes(b"")
    return folder
