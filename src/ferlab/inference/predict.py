"""Faces -> emotions: `EmotionRecognizer` and the JSON of a face (images: ferlab.inference.images;
models: ferlab.inference.sources).

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

A model adapted to fewer emotions (`ferlab adapt --emotions happy,sad,neutral`) answers with those alone,
in its bundle's order (`recognizer.emotions`); `probabilities` then has those keys.

An image without a face gives an empty list, not an error. Inputs a user can get
wrong (missing or unreadable file, corrupt or truncated image, an image above
`max_pixels`, a missing model) raise FerlabError with one sentence naming the input.
"""

import copy
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import cv2
import numpy as np

from ferlab.contract import EMOTIONS, IMAGE_SIZE, TTA_MODES, normalize, tta_views
from ferlab.errors import FerlabError
from ferlab.inference.detect import (
    DEFAULT_DETECTOR,
    DETECTORS,
    WHOLE_IMAGE,
    WITH_LANDMARKS,
    CropContract,
    Detection,
    crop_face,
    detect_filling,
    face_square,
    get_detector,
)
from ferlab.inference.images import DEFAULT_MAX_PIXELS, ImageInput, decode, load_image
from ferlab.inference.sources import DEFAULT_RUNTIME, label, load_model, resolve

# Test-time augmentation of each face (TTA_MODES, contract.tta_views): "flip" averages the
# probabilities of the face and its mirror image (one batch of twice the faces; +1 point on
# PrivateTest, see README); "ten-crop" averages ten views (shifted towards each corner, unmoved,
# and their mirrors; ten times the faces; not better on faces found in photos, see README);
# "scale-rotate" averages ten views (unmoved, scaled 0.9 and 1.1, turned -8 and 8 degrees, and
# their mirrors; ten times the faces; better than ten-crop on faces found in photos, see README);
# "none" classifies the face alone.
DEFAULT_TTA = "flip"

# Where the detector finds no face, it looks again at the image framed by this share of its longer
# side on every side, for a face that fills the image (detect_filling; README, Faces that fill the
# image). 0 turns it off. Costs a second detection on images and frames without a face.
FILL_PAD = 1.0


def fill_pad_of(filling_faces: bool) -> float:
    """The recognizer's fill_pad for the tools' --filling-faces / --no-filling-faces."""
    return FILL_PAD if filling_faces else 0.0


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, w, h
    confidence: float | None
    probabilities: dict[str, float]  # emotion name -> probability, in the model's order (EMOTIONS for FER2013's seven)

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

    # The flat form of to_dict, for CSV and tables: `ferlab detect --csv`, the video CSV (row_fields: a model's own emotions).
    ROW_FIELDS = ("x", "y", "w", "h", "confidence", "emotion", *EMOTIONS)

    @staticmethod
    def row_fields(emotions: tuple[str, ...] = EMOTIONS) -> tuple[str, ...]:
        return ("x", "y", "w", "h", "confidence", "emotion", *emotions)

    def to_row(self) -> list:
        confidence = "" if self.confidence is None else f"{self.confidence:.4f}"
        return [*self.box, confidence, self.emotion, *(f"{p:.4f}" for p in self.probabilities.values())]

    def values(self) -> list:
        """ROW_FIELDS as numbers, unrounded (confidence None where the detector gives none): for typed tables (Parquet, Spark)."""
        return [*self.box, self.confidence, self.emotion, *self.probabilities.values()]


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


CHUNK = 32  # images whose faces go through the model together (classify_in_chunks: predict_files, ferlab detect, ferlab evaluate)
T = TypeVar("T")


# ---- the recognizer -------------------------------------------------------------------------


class EmotionRecognizer:
    """Detect faces, crop them by the model's contract, classify them in batches.

    model: a classifier from ferlab.inference.classifier, or a Keras model (run as a traced graph).
    The contract's alignment levels the faces whose eyes the detector finds (BlazeFace, MTCNN);
    Haar's boxes have no eyes and are cropped as found.
    """

    def __init__(
        self,
        model,
        detector: str = DEFAULT_DETECTOR,
        contract: CropContract = CropContract(),
        max_pixels: int = DEFAULT_MAX_PIXELS,
        tta: str = DEFAULT_TTA,
        fill_pad: float = FILL_PAD,
    ):
        from ferlab.inference.classifier import as_classifier

        if tta not in TTA_MODES:
            raise FerlabError(f"unknown test-time augmentation {tta!r}; choose one of {', '.join(TTA_MODES)}.")
        if detector not in DETECTORS:
            raise FerlabError(f"unknown face detector {detector!r}; choose one of {', '.join(DETECTORS)}.")
        self.classifier = as_classifier(model)
        self.emotions: tuple[str, ...] = tuple(getattr(self.classifier, "emotions", EMOTIONS))  # the model's outputs, in order
        self.detector_name = detector
        self.contract = contract
        self.max_pixels = max_pixels
        self.tta = tta
        self.fill_pad = fill_pad
        self.model_source: str | None = None  # which model answers, as `ferlab detect --json` says it (set by load)
        self._detector = None

    @classmethod
    def load(
        cls,
        source: str | os.PathLike | None = None,
        detector: str = DEFAULT_DETECTOR,
        align: bool | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        runtime: str = DEFAULT_RUNTIME,
        tta: str = DEFAULT_TTA,
        fill_pad: float = FILL_PAD,
    ) -> "EmotionRecognizer":
        """source: as load_model takes it; None: the model `ferlab.inference.sources.resolve` chooses
        ($FERLAB_MODEL, the registry's production model, models/bundle, the shipped pretrained model).
        align: None keeps the model's crop contract; True asks for a detector with eye landmarks.
        fill_pad: where the detector finds no face, look again at the image framed by this much of its
        longer side, for one face that fills it (a cropped portrait); 0 does not look again."""
        if align and detector in DETECTORS and detector not in WITH_LANDMARKS:
            raise FerlabError(
                f"aligning faces needs eye landmarks, which the {detector} detector does not give; "
                f"use --detector {' or '.join(WITH_LANDMARKS)}, or turn alignment off."
            )
        chosen = resolve(source)
        try:
            classifier, contract = load_model(chosen.source, runtime)
        except FerlabError as err:
            if chosen.why == "$FERLAB_MODEL":
                raise FerlabError(f"$FERLAB_MODEL names a model that cannot be used: {err}") from None
            raise
        if align is not None:
            contract = CropContract(contract.margin, align)
        recognizer = cls(classifier, detector, contract, max_pixels, tta, fill_pad)
        recognizer.model_source = label(chosen.source)
        return recognizer

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
            if not detections and self.fill_pad:  # perhaps one face filling the image: look again, framed
                detections = detect_filling(self.detector, bgr, self.fill_pad)
        faces = [crop_face(grey, d, contract) for d in detections]
        return detections, np.stack(faces) if faces else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """(N, 48, 48) uint8 faces -> (N, k) float32 probabilities, in the order of self.emotions."""
        if len(faces) == 0:
            return np.zeros((0, len(self.emotions)), np.float32)
        views = tta_views(faces, self.tta)
        probabilities = self.classifier(normalize(views.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)))
        return probabilities.reshape(len(views), len(faces), -1).mean(axis=0)

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
        probabilities, maps = explain.heat_maps(self, faces, used)
        return explanations(detections, probabilities, maps, used, self.regions(bgr, detections, face_crop), self.emotions)

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

        def name_of(entry) -> str:
            return entry[0] if isinstance(entry, tuple) else entry

        def read(entry) -> tuple[tuple[np.ndarray, list[Detection]], np.ndarray]:
            if isinstance(entry, tuple):
                image = decode(bytes(entry[1] or b""), entry[0], self.max_pixels)
            else:
                image = load_image(entry, max_pixels=self.max_pixels)
            detections, faces = self.crops_of(image, face_crop)
            return (image, detections), faces

        for entry, kept, probabilities in classify_in_chunks(self.classify, paths, read, chunk, on_read):
            if probabilities is None:  # kept is the error
                yield name_of(entry), None, kept
            else:
                image, detections = kept
                yield name_of(entry), image, assemble([detections], probabilities, self.emotions)[0]

    def predict_batch(self, images: Iterable[ImageInput], face_crop: bool = False, color: str = "bgr") -> list[list[Face]]:
        """The faces of many images; all faces go through the model together."""
        found = [self.crops(image, face_crop, color) for image in images]
        probabilities = self.classify(np.concatenate([faces for _, faces in found])) if found else None
        return assemble([detections for detections, _ in found], probabilities, self.emotions)


def classify_in_chunks(
    classify: Callable[[np.ndarray], np.ndarray],
    items: Sequence[T],
    crop: Callable[[T], tuple[object, np.ndarray]],
    chunk: int = CHUNK,
    on_read: Callable[[], None] | None = None,
) -> Iterator[tuple[T, object, np.ndarray | None]]:
    """The one crop -> classify loop of the tools that read many images (predict_files, ferlab evaluate):
    for each item in order, (item, what crop(item) kept, the probabilities (k, 7) of its k faces), or
    (item, the FerlabError that crop raised, None). crop(item) -> (what to keep, (k, 48, 48) uint8 faces);
    the faces of `chunk` items go through `classify` (the recognizer's, with its TTA) in one call;
    `on_read` is called after each item is cropped (progress)."""
    for start in range(0, len(items), chunk):
        read = []
        for item in items[start : start + chunk]:
            try:
                read.append((item, *crop(item)))
            except FerlabError as err:
                read.append((item, err, None))
            if on_read:
                on_read()
        faces = [faces for _, _, faces in read if faces is not None]
        probabilities = classify(np.concatenate(faces)) if faces else None
        row = 0
        for item, kept, faces in read:
            if faces is None:
                yield item, kept, None
            else:
                yield item, kept, probabilities[row : row + len(faces)]
                row += len(faces)


def assemble(detections: list[list[Detection]], probabilities: np.ndarray, emotions: tuple[str, ...] = EMOTIONS) -> list[list[Face]]:
    """Split the probabilities of all faces back per image, as Faces, largest first; `emotions` names
    the columns (the recognizer's `emotions`)."""
    if probabilities is not None and len(probabilities) and np.shape(probabilities)[-1] != len(emotions):
        raise FerlabError(
            f"the model gives {np.shape(probabilities)[-1]} probabilities per face, not one for each of {', '.join(emotions)}; "
            "pass the recognizer's emotions."
        )
    results, start = [], 0
    for dets in detections:
        faces = [Face(d.box, d.confidence, {e: float(p) for e, p in zip(emotions, probabilities[start + i])}) for i, d in enumerate(dets)]
        start += len(dets)
        results.append(sorted(faces, key=lambda f: -f.box[2] * f.box[3]))
    return results


def explanations(
    detections: list[Detection],
    probabilities: np.ndarray,
    maps: np.ndarray,
    method: str,
    regions: list[np.ndarray],
    emotions: tuple[str, ...] = EMOTIONS,
) -> list[Explanation]:
    """The Explanations of one image's faces, largest first (the order of assemble)."""
    (faces,) = assemble([detections], probabilities, emotions)
    order = sorted(range(len(detections)), key=lambda i: -detections[i].box[2] * detections[i].box[3])
    return [Explanation(face, maps[i], method, regions[i]) for face, i in zip(faces, order)]
