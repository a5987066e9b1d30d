"""Image contract shared by training and inference: size and normalisation."""

import numpy as np

IMAGE_SIZE = 48
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
# Model inputs are grey levels divided by this: [0, 255] -> [0, 1].
PIXEL_SCALE = 255.0
# A detected face box is grown by this fraction of its size on each side before the
# 48x48 crop. 0: Haar's box on FER2013 faces already spans their 48x48 frame (measured
# on 630 faces, see ferlab.detect), so a detected face is framed as the training faces.
FACE_MARGIN = 0.0


def contract() -> dict:
    """The preprocessing contract written into the model bundle."""
    return {
        "input_size": [IMAGE_SIZE, IMAGE_SIZE],
        "channels": 1,
        "color": "grayscale",
        "normalize": f"pixel / {PIXEL_SCALE:g}",
        "face_margin": FACE_MARGIN,
        "dtype": "float32",
    }


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 faces (N, 48, 48) or (N, 48, 48, 1) -> float32 (N, 48, 48, 1) in [0, 1]."""
    x = np.asarray(images, dtype=np.float32) / PIXEL_SCALE
    if x.ndim == 3:
        x = x[..., np.newaxis]
    return x
