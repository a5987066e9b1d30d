"""The contract between training and inference: the emotions (names and ids), the splits,
the input size, the normalisation, the face margin of the crop and the test-time views."""

import numpy as np

# Ids are those of the original challenge CSV (fer2013.csv, column `emotion`).
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)
EMOTION_TO_ID: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}

# The `Usage` values of fer2013.csv, which are also the file-name prefixes of the
# Kaggle image-folder archive. Protocol: train / select / report.
TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT = "Training", "PublicTest", "PrivateTest"
SPLITS: tuple[str, ...] = (TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT)

# Rows x classes of the complete dataset, in EMOTIONS order.
FULL_COUNTS: dict[str, tuple[int, ...]] = {
    TRAIN_SPLIT: (3995, 436, 4097, 7215, 4830, 3171, 4965),
    VAL_SPLIT: (467, 56, 496, 895, 653, 415, 607),
    TEST_SPLIT: (491, 55, 528, 879, 594, 416, 626),
}


def emotion_id(name: str) -> int:
    try:
        return EMOTION_TO_ID[name.lower()]
    except KeyError:
        raise ValueError(f"unknown emotion {name!r}; expected one of {', '.join(EMOTIONS)}") from None


IMAGE_SIZE = 48
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
# Model inputs are grey levels divided by this: [0, 255] -> [0, 1].
PIXEL_SCALE = 255.0
# A detected face box is grown by this fraction of its size on each side before the
# 48x48 crop. 0: Haar's box on FER2013 faces already spans their 48x48 frame (measured
# on 630 faces, see ferlab.inference.detect), so a detected face is framed as the training faces.
FACE_MARGIN = 0.0
# Level the eyes of a detected face before the crop, where the detector finds them (BlazeFace,
# MTCNN). FER2013's faces are not aligned but roughly upright, so levelling a tilted face moves it
# towards what the model learnt from (measured with benchmarks/framed_accuracy.py; README, Results).
FACE_ALIGN = True


def preprocessing() -> dict:
    """The preprocessing contract written into the model bundle."""
    return {
        "input_size": [IMAGE_SIZE, IMAGE_SIZE],
        "channels": 1,
        "color": "grayscale",
        "normalize": f"pixel / {PIXEL_SCALE:g}",
        "face_margin": FACE_MARGIN,
        "align": FACE_ALIGN,
        "dtype": "float32",
    }


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 faces (N, 48, 48) or (N, 48, 48, 1) -> float32 (N, 48, 48, 1) in [0, 1]."""
    x = np.asarray(images, dtype=np.float32) / PIXEL_SCALE
    if x.ndim == 3:
        x = x[..., np.newaxis]
    return x


# Ten-crop test-time augmentation moves each face this many pixels towards each corner: ferlab_cnn
# looks at its centre 44x44, so a shift of 2 shows it its four corner crops (evaluate uses the
# margin of the model's own centre crop; the tools, which may run a TFLite file, use this).
TEN_CROP_SHIFT = 2


def ten_view_offsets(shift: int = TEN_CROP_SHIFT) -> list[tuple[int, int]]:
    """(dy, dx) of the five unmirrored ten_views: pixel (i, j) of view k shows the face's pixel
    (i + dy, j + dx); the last is the face unmoved."""
    return [(-shift, -shift), (-shift, shift), (shift, -shift), (shift, shift), (0, 0)]


def ten_views(faces: np.ndarray, shift: int = TEN_CROP_SHIFT) -> np.ndarray:
    """(N, 48, 48) faces -> (10, N, 48, 48): each face moved `shift` pixels towards each corner
    (borders reflected), unmoved, and the mirror images of those five."""
    size = faces.shape[1]
    padded = np.pad(faces, ((0, 0), (shift, shift), (shift, shift)), mode="reflect")
    views = [padded[:, shift + dy : shift + dy + size, shift + dx : shift + dx + size] for dy, dx in ten_view_offsets(shift)]
    return np.stack(views + [v[:, :, ::-1] for v in views])


# Scale-rotate test-time augmentation: (degrees, scale) of the four warped views, about the face's
# centre (README, "Test-time augmentation" under the tools).
SCALE_ROTATE_WARPS = ((0.0, 0.9), (0.0, 1.1), (-8.0, 1.0), (8.0, 1.0))


def scale_rotate_matrices() -> list[np.ndarray]:
    """The 2x3 affine maps of the five unmirrored scale_rotate_views (the first is the identity):
    view pixel (x, y) shows the face's pixel at the inverse map of (x, y)."""
    import cv2

    centre = ((IMAGE_SIZE - 1) / 2, (IMAGE_SIZE - 1) / 2)
    return [np.float32([[1, 0, 0], [0, 1, 0]])] + [cv2.getRotationMatrix2D(centre, a, s) for a, s in SCALE_ROTATE_WARPS]


def scale_rotate_views(faces: np.ndarray) -> np.ndarray:
    """(N, 48, 48) faces -> (10, N, 48, 48): each face unmoved, shrunk to 90%, grown to 110%,
    turned 8 degrees each way (borders reflected), and the mirror images of those five."""
    import cv2

    size = faces.shape[1]
    views = [faces] + [
        np.stack([cv2.warpAffine(f, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101) for f in faces])
        if len(faces)
        else faces
        for m in scale_rotate_matrices()[1:]
    ]
    return np.stack(views + [v[:, :, ::-1] for v in views])


# Test-time augmentation of a face: the views whose probabilities are averaged (tta_views).
TTA_MODES = ("flip", "ten-crop", "scale-rotate", "none")


def tta_views(faces: np.ndarray, tta: str) -> np.ndarray:
    """(N, 48, 48) faces -> (V, N, 48, 48): the face and its mirror image (flip), ten_views
    (ten-crop), scale_rotate_views (scale-rotate), or the face alone (none)."""
    if tta == "ten-crop":
        return ten_views(faces)
    if tta == "scale-rotate":
        return scale_rotate_views(faces)
    return np.stack([faces, faces[:, :, ::-1]]) if tta == "flip" else faces[None]
