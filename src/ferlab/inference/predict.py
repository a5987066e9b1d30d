"""Faces -> emotions: `EmotionRecognizer`, image loading, and the JSON of a face.

    recognizer = EmotionRecognizer.load("models/bundle")     # or a .h5, a .tflite, or models:/<name>@<alias>
    for face in recognizer.predict("photo.jpg"):             # a path, encoded bytes or a NumPy array
        print(face.box, face.emotion, face.probabilities["happy"])
    for why in recognizer.explain("photo.jpg"):              # the same faces, each with a heat map (ferlab.inference.explain)
        cv2.imwrite("why.png", why.overlay())                # of the regions that moved its top emotion

The JSON of one face (`Face.to_dict()`), a stable schema that the CLI and the web
service share:

    {
      "box": {"x": 120, "y": 80, "w": 96, "h": 96},  # pixels of the input image, top-left origin
      "confidence": 0.998,                             # the detector's (blazeface, mtcnn); null for haar and face crops
      "emotion": "happy",                              # the most probable emotion
      "probabilities": {"angry": 0.01, "disgust": 0.0, "fear": 0.02, "happy": 0.9,
                        "sad": 0.02, "surprise": 0.01, "neutral": 0.04}  # all 7, in ferlab.contract.EMOTIONS order
    }

An image without a face gives an empty list, not an error. Inputs a user can get
wrong (missing or unreadable file, corrupt or truncated image, an image above
`max_pixels`, a missing model) raise FerlabError with one sentence naming the input.
"""

import copy
import io
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from ferlab.config import Paths
from ferlab.contract import EMOTIONS, IMAGE_SIZE, normalize
from ferlab.errors import FerlabError
from ferlab.inference.detect import (
    DEFAULT_DETECTOR,
    DETECTORS,
    WHOLE_IMAGE,
    WITH_LANDMARKS,
    CropContract,
    Detection,
    crop_face,
    face_square,
    get_detector,
)

DEFAULT_MODEL = Paths().model
DEFAULT_MAX_PIXELS = 50_000_000  # a 48-megapixel phone photo passes; 20000x20000 does not
# A bundle folder (models/bundle, made by the package stage) holds these; only the model is required.
BUNDLE_MODEL = "model.h5"
BUNDLE_TFLITE = "model.tflite"  # the same model for LiteRT: no TensorFlow import
BUNDLE_CONTRACT = "preprocessing.json"  # {"face_margin": 0.1, "align": false, ...}: the crop contract
BUNDLE_LABELS = "labels.json"  # {"emotions": [{"id": 0, "name": "angry"}, ...]}: must be ferlab's
COLORS = ("bgr", "rgb")
# Test-time augmentation of each face: "flip" averages the probabilities of the face and its
# mirror image (one batch of twice the faces; +1 point on PrivateTest, see README), "none" does not.
TTA_MODES = ("flip", "none")
DEFAULT_TTA = "flip"

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, w, h
    confidence: float | None
    probabilities: dict[str, float]  # emotion name -> probability, EMOTIONS order

    @property
    def emotion(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    def to_dict(self) -> dict:
        x, y, w, h = self.box
        return {
            "box": {"x": x, "y": y, "w": w, "h": h},
            "confidence": self.confidence,
            "emotion": self.emotion,
            "probabilities": dict(self.probabilities),
        }

    # The flat form of to_dict, for CSV and tables: `ferlab detect --csv`, the video CSV.
    ROW_FIELDS = ("x", "y", "w", "h", "confidence", "emotion", *EMOTIONS)

    def to_row(self) -> list:
        confidence = "" if self.confidence is None else f"{self.confidence:.4f}"
        return [*self.box, confidence, self.emotion, *(f"{self.probabilities[e]:.4f}" for e in EMOTIONS)]

    def values(self) -> list:
        """ROW_FIELDS as numbers, unrounded (confidence None where the detector gives none): for typed tables (Parquet, Spark)."""
        return [*self.box, self.confidence, self.emotion, *(self.probabilities[e] for e in EMOTIONS)]


@dataclass(frozen=True)
class Explanation:
    """Why a face got its emotion (EmotionRecognizer.explain)."""

    face: Face
    heatmap: np.ndarray  # (48, 48) float32 in [0, 1] on the model input's pixels: what moved the top emotion
    method: str  # "occlusion" or "gradcam" (see ferlab.inference.explain)
    region: np.ndarray  # BGR uint8: the square of the image that the 48x48 input was made from

    def overlay(self) -> np.ndarray:
        """The region with the heat map blended on it (BGR uint8, 192 to 512 pixels a side)."""
        from ferlab.inference.explain import overlay

        return overlay(self.region, self.heatmap)

    def to_dict(self) -> dict:
        return {**self.face.to_dict(), "method": self.method}


# ---- images ---------------------------------------------------------------------------------


def _too_large(name: str, pixels: str, limit: int) -> FerlabError:
    return FerlabError(
        f"{name} has {pixels} pixels, above the limit of {limit:,}; resize it, or raise the limit (--max-pixels) if you have the memory."
    )


def _check_header(data: bytes, name: str, max_pixels: int) -> None:
    """Refuse an image above max_pixels from its header, before decoding it."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data)).size  # lazy: reads the header only
    except Image.DecompressionBombError as err:  # Pillow's own limit, at 2 * Image.MAX_IMAGE_PIXELS
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{int(found.group(1)):,}" if found else f"over {2 * Image.MAX_IMAGE_PIXELS:,}"
        raise _too_large(name, pixels, min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS)) from None
    except Exception:
        return  # not a format Pillow knows: OpenCV may, and says so below if not
    if width * height > max_pixels:
        raise _too_large(name, f"{width}x{height} = {width * height:,}", max_pixels)


def _decode(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    if not data:
        raise FerlabError(f"{name} is empty (0 bytes); it is not an image.")
    _check_header(data, name, max_pixels)
    # IMREAD_COLOR: 8-bit BGR whatever the file (grey, 16-bit, alpha), EXIF orientation applied.
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FerlabError(
            f"{name} is not a readable image (corrupt, truncated or not an image file); check it or save it again as JPEG or PNG."
        )
    if image.shape[0] * image.shape[1] > max_pixels:
        raise _too_large(name, f"{image.shape[1]}x{image.shape[0]}", max_pixels)
    return image


def _from_array(array: np.ndarray, color: str, max_pixels: int) -> np.ndarray:
    a = np.asarray(array)
    shape = a.shape
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or a.size == 0:
        raise FerlabError(f"the image array has shape {shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).")
    if a.shape[0] * a.shape[1] > max_pixels:
        raise _too_large("the image array", f"{a.shape[1]}x{a.shape[0]}", max_pixels)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype.kind == "f":
        if np.nanmin(a) < 0 or np.nanmax(a) > 1:
            raise FerlabError("the float image array has values outside [0, 1]; scale it to [0, 1] or pass uint8.")
        a = np.round(np.nan_to_num(a) * 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise FerlabError(f"the image array has dtype {a.dtype}; pass uint8, uint16 or float in [0, 1].")
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    codes = {("bgr", 3): None, ("rgb", 3): cv2.COLOR_RGB2BGR, ("bgr", 4): cv2.COLOR_BGRA2BGR, ("rgb", 4): cv2.COLOR_RGBA2BGR}
    code = codes[color, a.shape[2]]
    return np.ascontiguousarray(a) if code is None else cv2.cvtColor(a, code)


def load_image(image: ImageInput, color: str = "bgr", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A path, encoded bytes (JPEG, PNG, ...) or an array -> BGR uint8 (H, W, 3).

    `color` says the channel order of 3- and 4-channel arrays: "bgr" (OpenCV) or "rgb"
    (Pillow, scikit-image, matplotlib). Grey, RGBA/BGRA, uint16 and float [0, 1] arrays are accepted.
    """
    if color not in COLORS:
        raise FerlabError(f"unknown color order {color!r}; choose one of {', '.join(COLORS)}.")
    if isinstance(image, np.ndarray):
        return _from_array(image, color, max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(bytes(image), "the image bytes", max_pixels)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise FerlabError(f"{path}: no such file; check the path.")
        if path.is_dir():
            raise FerlabError(f"{path} is a folder; pass image files (the CLI also takes folders).")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise FerlabError(f"{path} cannot be read ({err.strerror}); check its permissions.") from None
        return _decode(data, str(path), max_pixels)
    raise FerlabError(f"cannot read an image from a {type(image).__name__}; pass a path, encoded bytes or a NumPy array.")


# ---- models ---------------------------------------------------------------------------------


def missing_model(source) -> FerlabError:
    return FerlabError(
        f"no model at {source}; run `dvc repro` to train one, or promote a registered model "
        "and pass --model models:/<name>@<alias> (or a .h5 file, or a bundle folder)."
    )


def _bundle_contract(folder: Path) -> CropContract:
    """The crop contract of a bundle (preprocessing.json), after checking its labels (labels.json)."""
    labels = folder / BUNDLE_LABELS
    contract = folder / BUNDLE_CONTRACT
    try:
        if labels.is_file():
            names = [e["name"] for e in json.loads(labels.read_text())["emotions"]]
            if tuple(names) != EMOTIONS:
                raise FerlabError(
                    f"{labels} lists the emotions {names}, not ferlab's {list(EMOTIONS)}; this model was trained for other labels."
                )
        return CropContract.from_dict(json.loads(contract.read_text())) if contract.is_file() else CropContract()
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FerlabError(
            f"the bundle {folder} has an unreadable {BUNDLE_LABELS} or {BUNDLE_CONTRACT} ({err}); rebuild it with `dvc repro`."
        ) from None


def _load_registered(uri: str):
    from ferlab.lifecycle import registry, tracking

    name, alias = registry.parse_uri(uri)
    if tracking.connect() is None:
        raise FerlabError(
            f"cannot resolve {uri}: there is no MLflow registry at {tracking.tracking_uri()}; run `dvc repro` and "
            "`ferlab models promote` in the project, set MLFLOW_TRACKING_URI, or pass --model with a .h5 file."
        )
    return Path(registry.local_model_file(name, alias))


RUNTIMES = ("auto", "tflite", "keras")
CHUNK = 32  # images whose faces go through the model together (predict_files, ferlab detect, ferlab evaluate)


def default_model() -> str:
    """The bundle folder when the package stage made one (its TFLite model loads without
    TensorFlow), else the trained .h5."""
    bundle = Path(Paths().bundle)
    return str(bundle) if (bundle / BUNDLE_MODEL).is_file() else DEFAULT_MODEL


def load_model(source: str | os.PathLike = DEFAULT_MODEL, runtime: str = "auto"):
    """(classifier, CropContract) from a .h5 file, a .tflite file, a bundle folder or models:/<name>@<alias>.

    runtime: "tflite" runs the bundle's model.tflite on LiteRT, "keras" the .h5 on TensorFlow;
    "auto" takes the TFLite model where the source has one.
    """
    from ferlab.inference.classifier import KerasClassifier, TFLiteClassifier
    from ferlab.training.model_io import load_h5

    if runtime not in RUNTIMES:
        raise FerlabError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}.")
    text = os.fspath(source)
    from ferlab.lifecycle.registry import is_uri

    if is_uri(text):
        h5 = _load_registered(text)
        folder = h5.parent
    else:
        path = Path(text)
        if path.is_dir():
            if not (path / BUNDLE_MODEL).is_file():
                raise FerlabError(
                    f"{path} holds no {BUNDLE_MODEL}; pass a bundle folder made by `dvc repro` (models/bundle) or a .h5 file."
                )
            h5, folder = path / BUNDLE_MODEL, path
        elif not path.is_file():
            raise missing_model(path)
        elif path.suffix.lower() == ".tflite":
            if runtime == "keras":
                raise FerlabError(f"{path} is a TFLite model; the keras runtime needs a .h5 file or a bundle folder.")
            return TFLiteClassifier(path), CropContract()
        else:
            h5, folder = path, None
    contract = _bundle_contract(folder) if folder is not None else CropContract()
    tflite = folder / BUNDLE_TFLITE if folder is not None else None
    if runtime == "tflite" and not (tflite and tflite.is_file()):
        raise FerlabError(
            f"{text} has no {BUNDLE_TFLITE}; pass a bundle folder made by `dvc repro` (models/bundle), or use --runtime keras."
        )
    if runtime != "keras" and tflite is not None and tflite.is_file():
        return TFLiteClassifier(tflite), contract
    return KerasClassifier(load_h5(h5)), contract


# ---- the recognizer -------------------------------------------------------------------------


class EmotionRecognizer:
    """Detect faces, crop them by the model's contract, classify them in batches.

    model: a classifier from ferlab.inference.classifier, or a Keras model (run as a traced graph).
    """

    def __init__(
        self,
        model,
        detector: str = DEFAULT_DETECTOR,
        contract: CropContract = CropContract(),
        max_pixels: int = DEFAULT_MAX_PIXELS,
        tta: str = DEFAULT_TTA,
    ):
        from ferlab.inference.classifier import as_classifier

        if tta not in TTA_MODES:
            raise FerlabError(f"unknown test-time augmentation {tta!r}; choose one of {', '.join(TTA_MODES)}.")
        if detector not in DETECTORS:
            raise FerlabError(f"unknown face detector {detector!r}; choose one of {', '.join(DETECTORS)}.")
        if contract.align and detector not in WITH_LANDMARKS:
            raise FerlabError(
                f"aligning faces needs eye landmarks, which the {detector} detector does not give; "
                f"use --detector {' or '.join(WITH_LANDMARKS)}, or turn alignment off."
            )
        self.classifier = as_classifier(model)
        self.detector_name = detector
        self.contract = contract
        self.max_pixels = max_pixels
        self.tta = tta
        self._detector = None

    @classmethod
    def load(
        cls,
        source: str | os.PathLike | None = None,
        detector: str = DEFAULT_DETECTOR,
        align: bool | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        runtime: str = "auto",
        tta: str = DEFAULT_TTA,
    ) -> "EmotionRecognizer":
        """source: as load_model takes it; None: the bundle if there is one, else models/model.h5."""
        classifier, contract = load_model(default_model() if source is None else source, runtime)
        if align is not None:
            contract = CropContract(contract.margin, align)
        return cls(classifier, detector, contract, max_pixels, tta)

    @property
    def detector(self):
        if self._detector is None:
            self._detector = get_detector(self.detector_name)
        return self._detector

    def with_own_detector(self) -> "EmotionRecognizer":
        """A recognizer sharing this one's classifier and contract, with a detector of its own:
        detectors are not thread-safe (OpenCV's Haar cascade crashes when shared), so each
        thread that detects needs one."""
        twin = copy.copy(self)
        twin._detector = get_detector(self.detector_name)
        return twin

    def crops(self, image: ImageInput, face_crop: bool = False, color: str = "bgr") -> tuple[list[Detection], np.ndarray]:
        """Detections of one image and their (N, 48, 48) uint8 model inputs.

        face_crop: the image already is a face (FER2013-style); no detection.
        """
        return self.crops_of(load_image(image, color, self.max_pixels), face_crop)

    def crops_of(self, bgr: np.ndarray, face_crop: bool = False) -> tuple[list[Detection], np.ndarray]:
        """`crops` of an image already decoded to BGR."""
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if face_crop:
            detections, contract = [Detection((0, 0, grey.shape[1], grey.shape[0]))], WHOLE_IMAGE
        else:
            detections, contract = self.detector.detect(bgr), self.contract
        faces = [crop_face(grey, d, contract) for d in detections]
        return detections, np.stack(faces) if faces else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """(N, 48, 48) uint8 faces -> (N, 7) float32 probabilities, EMOTIONS order."""
        if len(faces) == 0:
            return np.zeros((0, len(EMOTIONS)), np.float32)
        x = normalize(faces)
        if self.tta == "none":
            return self.classifier(x)
        both = self.classifier(np.concatenate([x, x[:, :, ::-1]]))
        return (both[: len(x)] + both[len(x) :]) / 2

    def regions(self, image: np.ndarray, detections: list[Detection], face_crop: bool = False) -> list[np.ndarray]:
        """The squares of a BGR image that crops() made the 48x48 inputs from, at the image's resolution."""
        contract = WHOLE_IMAGE if face_crop else self.contract
        return [face_square(image, d, contract) for d in detections]

    def explain(self, image: ImageInput, face_crop: bool = False, method: str = "auto", color: str = "bgr") -> list[Explanation]:
        """The faces of one image, largest first, each with a heat map of what its top emotion rests on.

        method: "occlusion" (every runtime), "gradcam" (a Keras model), or "auto": Grad-CAM where
        a Keras model is loaded, else occlusion. Both explain the probability predict() reports,
        the mirror image included when tta is "flip".
        """
        from ferlab.inference import explain

        used = explain.choose_method(method, self.classifier)
        bgr = load_image(image, color, self.max_pixels)
        detections, faces = self.crops(bgr, face_crop)
        if used == "occlusion":
            probabilities, maps = explain.occlusion_maps(self.classify(explain.occlusion_inputs(faces)), len(faces))
        else:
            probabilities = self.classify(faces)
            maps = explain.gradcam_maps(self.classifier.model, faces, probabilities.argmax(axis=1), self.tta == "flip")
        return explanations(detections, probabilities, maps, used, self.regions(bgr, detections, face_crop))

    def predict(self, image: ImageInput, face_crop: bool = False, color: str = "bgr") -> list[Face]:
        """The faces of one image, largest first."""
        return self.predict_batch([image], face_crop, color)[0]

    def predict_files(
        self, paths: list[str | tuple[str, bytes]], face_crop: bool = False, chunk: int = CHUNK, on_read: Callable[[], None] | None = None
    ) -> Iterator[tuple[str, np.ndarray | None, list[Face] | FerlabError]]:
        """For each path in order: (path, the decoded image, its faces), or (path, None, the error
        that stopped it). The faces of `chunk` images go through the model together; each image
        is decoded once; `on_read` is called after each path is read (progress). An entry may be
        (name, encoded bytes) instead of a path (an image held in a table): it is named `name`."""
        for start in range(0, len(paths), chunk):
            read = []
            for entry in paths[start : start + chunk]:
                path = entry[0] if isinstance(entry, tuple) else entry
                try:
                    if isinstance(entry, tuple):
                        image = _decode(bytes(entry[1] or b""), path, self.max_pixels)
                    else:
                        image = load_image(path, max_pixels=self.max_pixels)
                    read.append((path, image, *self.crops_of(image, face_crop)))
                except FerlabError as err:
                    read.append((path, None, err, None))
                if on_read:
                    on_read()
            ok = [r for r in read if r[1] is not None]
            probabilities = self.classify(np.concatenate([r[3] for r in ok])) if ok else None
            found = iter(assemble([r[2] for r in ok], probabilities)) if ok else iter(())
            for path, image, detections_or_error, _ in read:
                yield (path, None, detections_or_error) if image is None else (path, image, next(found))

    def predict_batch(self, images: Iterable[ImageInput], face_crop: bool = False, color: str = "bgr") -> list[list[Face]]:
        """The faces of many images; all faces go through the model together."""
        found = [self.crops(image, face_crop, color) for image in images]
        probabilities = self.classify(np.concatenate([faces for _, faces in found])) if found else None
        return assemble([detections for detections, _ in found], probabilities)


def assemble(detections: list[list[Detection]], probabilities: np.ndarray) -> list[list[Face]]:
    """Split the probabilities of all faces back per image, as Faces, largest first."""
    results, start = [], 0
    for dets in detections:
        faces = [Face(d.box, d.confidence, {e: float(p) for e, p in zip(EMOTIONS, probabilities[start + i])}) for i, d in enumerate(dets)]
        start += len(dets)
        results.append(sorted(faces, key=lambda f: -f.box[2] * f.box[3]))
    return results


def explanations(
    detections: list[Detection], probabilities: np.ndarray, maps: np.ndarray, method: str, regions: list[np.ndarray]
) -> list[Explanation]:
    """The Explanations of one image's faces, largest first (the order of assemble)."""
    (faces,) = assemble([detections], probabilities)
    order = sorted(range(len(detections)), key=lambda i: -detections[i].box[2] * detections[i].box[3])
    return [Explanation(face, maps[i], method, regions[i]) for face, i in zip(faces, order)]
