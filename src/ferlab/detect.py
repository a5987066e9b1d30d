"""Face detectors by name, and the crop contract that turns a detected face into a model input.

Detectors take a BGR uint8 image (H, W, 3) and return `Detection`s:

- `haar`: OpenCV's frontal-face Haar cascade from `cv2.data` (the seed paper's); no
  confidence, no landmarks. Needs OpenCV 4.x: OpenCV 5 no longer ships the cascade.
- `mtcnn`: the `mtcnn` package (weights included, runs on TensorFlow); a confidence
  and eye landmarks, which allow aligning the face.

The crop contract (`CropContract`): a square of side max(w, h) * (1 + 2 * margin),
centred on the detected box, optionally rotated so the eyes are level, resized to
48x48 grey levels. The margin defaults to ferlab.image.FACE_MARGIN, the value the
package bundle writes to its preprocessing.json (`face_margin`); alignment is off by
default, as FER2013's faces are not aligned.

Measured on 630 FER2013 faces (enlarged 4x, edges stretched): Haar's box covers the
48x48 frame (median 47.25 px, centred), and the square on MTCNN's box is 49.6 px, so a
margin of 0 frames a detected face as FER2013 does.
"""

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from ferlab.errors import FerlabError
from ferlab.image import FACE_MARGIN, IMAGE_SIZE

DETECTORS = ("haar", "mtcnn")
WITH_LANDMARKS = ("mtcnn",)  # detectors that give eye positions, so faces can be aligned
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_WINDOW = 24  # the cascade's own window: its smallest face


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x, y, w, h in pixels of the image, top-left origin
    confidence: float | None = None  # the detector's, where it has one
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None  # (x, y) of the eye on the image's left, then right


@dataclass(frozen=True)
class CropContract:
    margin: float = FACE_MARGIN  # the box grows by this share of its size on each side
    align: bool = False  # rotate so the eyes are level (needs a detector with landmarks)

    @classmethod
    def from_dict(cls, data: dict) -> "CropContract":
        """From a bundle's preprocessing.json (keys `face_margin`, `align`)."""
        return cls(margin=float(data.get("face_margin", FACE_MARGIN)), align=bool(data.get("align", False)))

    def to_dict(self) -> dict:
        return {"face_margin": self.margin, "align": self.align}


WHOLE_IMAGE = CropContract(margin=0.0, align=False)  # for images that already are face crops


class HaarDetector:
    name = "haar"
    has_landmarks = False

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 30, max_side: int = 320):
        if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
            raise FerlabError(
                f"the haar detector needs OpenCV 4 (this is OpenCV {cv2.__version__}, which has no Haar cascade); "
                'run `pip install "opencv-python-headless<5"` or use --detector mtcnn.'
            )
        path = os.path.join(cv2.data.haarcascades, HAAR_CASCADE)
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise FerlabError(f"cannot load the Haar cascade {path}; reinstall opencv-python-headless.")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        # Larger images are searched at this longest side: the cascade's cost grows with the
        # pixels, and a face that small there is below the model's 48x48 input anyway.
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[Detection]:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if min(grey.shape) < self.min_size:
            return []
        scale = min(1.0, self.max_side / max(grey.shape))
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        min_size = max(HAAR_WINDOW, round(self.min_size * scale))
        boxes = self._cascade.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_size, min_size)
        )
        return [Detection(tuple(int(round(v / scale)) for v in box)) for box in boxes]


class MtcnnDetector:
    name = "mtcnn"
    has_landmarks = True

    def __init__(self, min_confidence: float = 0.9, min_face_size: int = 20):
        try:
            from mtcnn import MTCNN
        except ImportError:
            raise FerlabError("the mtcnn detector needs the `mtcnn` package; run `pip install mtcnn` or use --detector haar.") from None
        self._mtcnn = MTCNN()
        self.min_confidence, self.min_face_size = min_confidence, min_face_size

    def detect(self, image: np.ndarray) -> list[Detection]:
        if min(image.shape[:2]) < self.min_face_size:
            return []
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        found = []
        for face in self._mtcnn.detect_faces(rgb, min_face_size=self.min_face_size):
            if face["confidence"] < self.min_confidence:
                continue
            x, y, w, h = (int(round(v)) for v in face["box"])
            points = face.get("keypoints", {})
            eyes = None
            if "left_eye" in points and "right_eye" in points:
                a, b = (tuple(map(float, points[k])) for k in ("left_eye", "right_eye"))
                eyes = (a, b) if a[0] <= b[0] else (b, a)
            found.append(Detection((x, y, w, h), float(face["confidence"]), eyes))
        return found


def get_detector(name: str):
    if name == "haar":
        return HaarDetector()
    if name == "mtcnn":
        return MtcnnDetector()
    raise FerlabError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}.")


def eye_angle(detection: Detection) -> float:
    """Degrees the face is rolled: positive when the eye on the image's right is lower."""
    (lx, ly), (rx, ry) = detection.eyes
    return math.degrees(math.atan2(ry - ly, rx - lx))


def crop_face(grey: np.ndarray, detection: Detection, contract: CropContract = CropContract()) -> np.ndarray:
    """The 48x48 uint8 model input for one detected face of a grey image (H, W).

    Parts of the square outside the image repeat the edge pixels.
    """
    x, y, w, h = detection.box
    side = max(w, h) * (1 + 2 * contract.margin)
    cx, cy = x + w / 2, y + h / 2
    angle = eye_angle(detection) if contract.align and detection.eyes else 0.0
    # Rotate about the box centre (levelling the eyes), then move that centre to the patch centre.
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    matrix[:, 2] += (side / 2 - cx, side / 2 - cy)
    n = max(1, int(round(side)))
    patch = cv2.warpAffine(grey, matrix, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    interpolation = cv2.INTER_AREA if n > IMAGE_SIZE else cv2.INTER_LINEAR
    return cv2.resize(patch, (IMAGE_SIZE, IMAGE_SIZE), interpolation=interpolation)
