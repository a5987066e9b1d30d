"""Face detection, the crop contract, image loading (bad input included) and EmotionRecognizer."""

import json
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from conftest import face_scene

from ferlab.contract import EMOTIONS, FACE_MARGIN, normalize, preprocessing, scale_rotate_views, ten_views
from ferlab.errors import FerlabError
from ferlab.inference import detect
from ferlab.inference.detect import CropContract, Detection, crop_face
from ferlab.inference.images import load_image
from ferlab.inference.predict import FILL_PAD, EmotionRecognizer
from ferlab.inference.sources import load_model
from ferlab.inference.video import Tracker

# ---- fixtures: real FER2013 faces, a tiny trained model -------------------------------------


def scene(face: np.ndarray, **layout) -> np.ndarray:
    return cv2.cvtColor(face_scene(face, **layout), cv2.COLOR_GRAY2BGR)


@pytest.fixture(scope="session")
def haar_faces(fer_faces):
    """FER2013 faces that the Haar detector finds, once enlarged into a frame."""
    haar = detect.get_detector("haar")
    tried = fer_faces[0][:15]
    picked = [f for f in tried if len(haar.detect(scene(f))) == 1]
    assert len(picked) >= 8, "the Haar detector should find most enlarged FER2013 faces"
    return picked[:8]


@pytest.fixture(scope="session")
def recognizer(tiny_model_path):
    """On Haar, which finds `haar_faces` by construction (the default detector is blazeface)."""
    return EmotionRecognizer.load(tiny_model_path, detector="haar")


# ---- bad input ------------------------------------------------------------------------------


def huge_png(width: int, height: int) -> bytes:
    """A grey PNG that declares width x height but holds only its first row: huge, yet tiny on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    first_row = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", first_row) + chunk(b"IEND", b"")


def huge_jpeg(face: np.ndarray, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is changed to declare width x height."""
    data = bytearray(encoded(face, ".jpg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def encoded(face: np.ndarray, suffix: str) -> bytes:
    ok, data = cv2.imencode(suffix, cv2.resize(face, (200, 200)))
    assert ok
    return data.tobytes()


@pytest.mark.parametrize(
    "name, make",
    [
        ("truncated.jpg", lambda f: encoded(f, ".jpg")[: len(encoded(f, ".jpg")) // 2]),
        ("truncated.png", lambda f: encoded(f, ".png")[: len(encoded(f, ".png")) // 2]),
        ("corrupt.jpg", lambda f: encoded(f, ".jpg")[:4] + bytes(range(256)) * 40),
        ("corrupt.png", lambda f: encoded(f, ".png")[:8] + b"\x00" * 2000),
        ("notes.jpg", lambda f: b"these are my notes, not a picture\n"),
    ],
)
def test_unreadable_images_are_refused_with_their_name(tmp_path, fer_faces, name, make):
    path = tmp_path / name
    path.write_bytes(make(fer_faces[0][0]))
    with pytest.raises(FerlabError, match=rf"{name} is not a readable image .*save it again as JPEG or PNG"):
        load_image(path)


def test_zero_byte_missing_and_folder_inputs(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(FerlabError, match=r"empty\.jpg is empty \(0 bytes\)"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(FerlabError, match=r"nowhere\.jpg: no such file"):
        load_image(tmp_path / "nowhere.jpg")
    with pytest.raises(FerlabError, match="is a folder"):
        load_image(tmp_path)
    with pytest.raises(FerlabError, match="empty"):
        load_image(b"")


@pytest.mark.parametrize(
    "name, width, height, pixels",
    [
        ("huge.png", 20000, 20000, "400,000,000"),
        ("huge.jpg", 20000, 20000, "400,000,000"),
        ("large.png", 10000, 6000, "10000x6000 = 60,000,000"),
        ("large.jpg", 10000, 6000, "10000x6000 = 60,000,000"),
    ],
)
def test_huge_image_is_refused_from_its_header(tmp_path, fer_faces, name, width, height, pixels):
    path = tmp_path / name
    path.write_bytes(huge_png(width, height) if name.endswith(".png") else huge_jpeg(fer_faces[0][0], width, height))
    start = time.perf_counter()
    with pytest.raises(FerlabError, match=rf"{name} has {pixels} pixels, above the limit of 50,000,000; resize it"):
        load_image(path)
    assert time.perf_counter() - start < 1.0  # refused from the header, nothing decoded


def test_pixel_limit_is_configurable(fer_faces):
    data = encoded(fer_faces[0][0], ".png")  # 200x200
    assert load_image(data, max_pixels=40_000).shape == (200, 200, 3)
    with pytest.raises(FerlabError, match="above the limit of 39,999"):
        load_image(data, max_pixels=39_999)
    with pytest.raises(FerlabError, match="the image array has 200x200"):
        load_image(np.zeros((200, 200), np.uint8), max_pixels=100)


def test_image_inputs_agree(tmp_path, fer_faces):
    face = cv2.resize(fer_faces[0][0], (64, 64))
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), face)
    grey = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
    for source in (path, str(path), path.read_bytes(), face, face[..., None], face.astype(np.uint16) * 257, face.astype(np.float32) / 255):
        assert np.array_equal(load_image(source), grey)


def test_channel_orders():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # red in RGB order
    assert load_image(rgb, color="rgb")[0, 0].tolist() == [0, 0, 255]  # red in BGR order
    assert load_image(rgb)[0, 0].tolist() == [255, 0, 0]  # taken as BGR: blue
    rgba = np.dstack([rgb, np.full((4, 4), 128, np.uint8)])
    assert load_image(rgba, color="rgb")[0, 0].tolist() == [0, 0, 255]
    with pytest.raises(FerlabError, match="unknown color order 'hsv'"):
        load_image(rgb, color="hsv")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 4, 2), np.uint8), r"shape \(4, 4, 2\)"),
        (np.zeros((0, 4), np.uint8), r"shape \(0, 4\)"),
        (np.zeros((4, 4), np.int64), "dtype int64"),
        (np.full((4, 4), 200.0), r"outside \[0, 1\]"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(FerlabError, match=message):
        load_image(array)


def test_no_face_and_tiny_images_give_empty_results(recognizer):
    rng = np.random.default_rng(0)
    assert recognizer.predict(np.full((480, 640, 3), 128, np.uint8)) == []
    assert recognizer.predict(rng.integers(0, 256, (480, 640), dtype=np.uint8)) == []
    one_pixel = cv2.imencode(".png", np.zeros((1, 1), np.uint8))[1].tobytes()
    assert recognizer.predict(one_pixel) == []


# ---- detection and the crop contract ---------------------------------------------------------


def test_haar_frames_a_face_as_fer2013_does(haar_faces):
    """Haar's box on an enlarged FER2013 face is that face's 48x48 frame (the measurement in detect.py)."""
    haar = detect.get_detector("haar")
    sizes = []
    for face in haar_faces:
        (found,) = haar.detect(scene(face, side=160, at=(200, 120)))
        x, y, w, h = found.box
        assert found.confidence is None and w == h
        assert abs(x + w / 2 - 280) < 16 and abs(y + h / 2 - 200) < 16
        sizes.append(w / 160)
    assert 0.7 < min(sizes) and max(sizes) < 1.4
    assert 0.9 < np.median(sizes) < 1.1


NO_MARGIN = CropContract(margin=0.0, align=False)


def test_default_contract_is_the_bundles():
    assert CropContract() == CropContract(margin=FACE_MARGIN, align=True)
    assert CropContract.from_dict(preprocessing()) == CropContract()
    assert CropContract.from_dict({"face_margin": 0.0}) == CropContract()  # a bundle from before `align`
    assert CropContract.from_dict(CropContract(0.25, True).to_dict()) == CropContract(0.25, True)


def test_crop_of_the_whole_face_is_the_face(fer_faces):
    face = fer_faces[0][0]
    assert np.array_equal(crop_face(face, Detection((0, 0, 48, 48)), NO_MARGIN), face)
    big = cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC)
    crop = crop_face(big, Detection((0, 0, 192, 192)), NO_MARGIN)
    assert crop.shape == (48, 48) and np.abs(crop.astype(int) - face).mean() < 6


def test_crop_margin_and_square():
    grey = np.zeros((200, 200), np.uint8)
    grey[50:150, 50:150] = 255  # a bright 100x100 square
    assert crop_face(grey, Detection((50, 50, 100, 100)), NO_MARGIN).min() == 255
    with_margin = crop_face(grey, Detection((50, 50, 100, 100)), CropContract(margin=0.25))
    assert with_margin[0, 0] == 0 and with_margin[24, 24] == 255  # 25% each side: a dark border around the square
    assert (with_margin == 255).mean() == pytest.approx(4 / 9, abs=0.05)
    tall = crop_face(grey, Detection((75, 50, 50, 100)), NO_MARGIN)  # a 50x100 box: the crop is its 100x100 square
    assert tall.min() == 255


def test_alignment_levels_the_eyes():
    grey = np.zeros((200, 200), np.uint8)
    left, right = (70, 80), (130, 110)  # the eye on the image's right is lower: the head is rolled
    for x, y in (left, right):
        cv2.circle(grey, (x, y), 6, 255, -1)
    detection = Detection((50, 50, 100, 100), eyes=(left, right))
    assert detect.eye_angle(detection) == pytest.approx(np.degrees(np.arctan2(30, 60)))

    def eye_rows(crop):
        ys, xs = np.nonzero(crop > 128)
        return ys[xs < 24].mean(), ys[xs >= 24].mean()

    unaligned = eye_rows(crop_face(grey, detection, NO_MARGIN))
    aligned = eye_rows(crop_face(grey, detection, CropContract(margin=0.0, align=True)))
    assert unaligned[1] - unaligned[0] > 5
    assert abs(aligned[1] - aligned[0]) < 1


class FramedOnly:
    """A detector that finds one face only where the image is framed (bigger than `side`),
    and records the sizes it was shown."""

    def __init__(self, side: int, box, eyes=None):
        self.side, self.box, self.eyes, self.shown = side, box, eyes, []

    def detect(self, image):
        self.shown.append(image.shape[:2])
        return [Detection(self.box, 0.9, self.eyes)] if image.shape[0] > self.side else []


def test_detect_filling_maps_the_framed_boxes_back_onto_the_image():
    # 512x384 image: shrunk to 256x192, framed by 256 px on each side -> 704x768
    detector = FramedOnly(192, (256 + 20, 256 + 10, 160, 160), ((256 + 60.0, 256 + 60.0), (256 + 120.0, 256 + 64.0)))
    image = np.zeros((384, 512, 3), np.uint8)
    (found,) = detect.detect_filling(detector, image, 1.0)
    assert detector.shown == [(192 + 512, 256 + 512)]
    assert found.box == (40, 20, 320, 320) and found.confidence == 0.9  # back at the image's scale
    assert found.eyes == ((120.0, 120.0), (240.0, 128.0))
    small = FramedOnly(192, (256, 256, 50, 50))  # under 0.3 of the shrunk image's 192-px side: not a face that fills it
    assert detect.detect_filling(small, image, 1.0) == []


def test_a_face_that_fills_the_image_is_found_by_a_second_look(tiny_model_path, fer_faces):
    faces = fer_faces[0][:40]
    portraits = [cv2.cvtColor(cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR) for f in faces]
    looking_again = EmotionRecognizer.load(tiny_model_path)  # blazeface
    once = EmotionRecognizer.load(tiny_model_path)
    once.fill_pad = 0
    first_look = [once.predict(p) for p in portraits]
    found = [looking_again.predict(p) for p in portraits]
    assert sum(len(f) > 0 for f in first_look) <= 8  # FER2013's crops are too tight for BlazeFace as they are
    assert sum(len(f) > 0 for f in found) >= 22, "framed, most of the faces are found (26 of these 40 when written)"
    for first, again in zip(first_look, found):
        if first:
            assert again == first  # a face found at the first look: no second one
            continue
        if not again:
            continue
        x, y, w, h = again[0].box
        assert w >= 128 and abs(x + w / 2 - 128) < 40 and abs(y + h / 2 - 128) < 40  # the face, about the image's centre


def test_the_second_look_is_only_for_images_without_a_face(tiny_model_path):
    image = np.zeros((100, 100, 3), np.uint8)
    recognizer = EmotionRecognizer.load(tiny_model_path)
    recognizer._detector = seen = FramedOnly(0, (10, 10, 60, 60))  # finds a face in every image
    assert len(recognizer.predict(image)) == 1 and seen.shown == [(100, 100)]
    recognizer._detector = blind = FramedOnly(10_000, (10, 10, 60, 60))  # finds none
    assert recognizer.predict(image) == [] and blind.shown == [(100, 100), (300, 300)]


def test_unknown_detector_and_alignment_without_landmarks(tiny_model_path):
    with pytest.raises(FerlabError, match="unknown face detector 'yolo'; choose one of blazeface, haar, mtcnn"):
        detect.get_detector("yolo")
    with pytest.raises(FerlabError, match="aligning faces needs eye landmarks.*--detector blazeface or mtcnn"):
        EmotionRecognizer.load(tiny_model_path, detector="haar", align=True)


def test_haar_with_the_default_aligning_contract_crops_faces_as_found(recognizer, haar_faces):
    image = scene(haar_faces[0])
    haar = EmotionRecognizer(recognizer.classifier, "haar", CropContract(margin=0.0, align=True))
    (detection,), crops = haar.crops(image)
    assert detection.eyes is None
    assert np.array_equal(crops[0], crop_face(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), detection, CropContract(0.0, align=False)))
    assert len(haar.predict(image)) == 1


def test_haar_missing_from_opencv_is_explained(monkeypatch):
    monkeypatch.delattr(cv2, "CascadeClassifier")
    with pytest.raises(FerlabError, match=r"haar detector needs OpenCV 4 .*opencv-python-headless<5.*--detector mtcnn"):
        detect.get_detector("haar")


def test_mtcnn_finds_the_face_with_eyes(haar_faces):
    pytest.importorskip("mtcnn")
    mtcnn = detect.get_detector("mtcnn")
    found = [mtcnn.detect(scene(face)) for face in haar_faces[:4]]
    assert sum(len(f) == 1 for f in found) >= 3
    for (d,) in (f for f in found if len(f) == 1):
        x, y, w, h = d.box
        assert 0.9 <= d.confidence <= 1.0
        assert abs(x + w / 2 - 280) < 20 and abs(y + h / 2 - 200) < 20
        (lx, ly), (rx, ry) = d.eyes
        assert x < lx < rx < x + w and y < ly < y + h / 2 + 10 and y < ry < y + h / 2 + 10


def test_recognizer_with_mtcnn_and_alignment(recognizer, haar_faces):
    pytest.importorskip("mtcnn")
    aligned = EmotionRecognizer(recognizer.classifier, "mtcnn", CropContract(align=True))
    image = scene(haar_faces[0])
    (face,) = aligned.predict(image)
    assert 0.9 <= face.to_dict()["confidence"] <= 1.0
    (detection,), crops = aligned.crops(image)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(crops[0], crop_face(gray, detection, CropContract(align=True)))
    if abs(detect.eye_angle(detection)) > 1:
        assert not np.array_equal(crops[0], crop_face(gray, detection, CropContract(align=False)))


# ---- the recognizer -------------------------------------------------------------------------


def test_face_json_schema(recognizer, haar_faces):
    (face,) = recognizer.predict(scene(haar_faces[0]))
    data = json.loads(json.dumps(face.to_dict()))
    assert list(data) == ["box", "confidence", "emotion", "probabilities"]
    assert list(data["box"]) == ["x", "y", "w", "h"] and all(isinstance(v, int) for v in data["box"].values())
    assert data["confidence"] is None
    assert list(data["probabilities"]) == list(EMOTIONS)
    assert sum(data["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert data["emotion"] == max(data["probabilities"], key=data["probabilities"].get)


def test_face_crop_mode_classifies_the_image_as_the_model_sees_it(recognizer, fer_faces):
    faces = fer_faces[0][:5]
    model = recognizer.classifier.model
    plain = np.asarray(model.predict_on_batch(normalize(faces)))
    mirrored = np.asarray(model.predict_on_batch(normalize(faces[:, :, ::-1])))
    untouched = EmotionRecognizer(recognizer.classifier, "haar", tta="none")
    assert recognizer.tta == "flip"  # the default: the mean of the face and its mirror image
    for face, want_flip, want_plain in zip(faces, (plain + mirrored) / 2, plain):
        (got,) = recognizer.predict(face, face_crop=True)
        assert got.box == (0, 0, 48, 48) and got.confidence is None
        assert [got.probabilities[e] for e in EMOTIONS] == pytest.approx(want_flip.tolist(), abs=1e-5)
        (alone,) = untouched.predict(face, face_crop=True)
        assert [alone.probabilities[e] for e in EMOTIONS] == pytest.approx(want_plain.tolist(), abs=1e-5)


@pytest.mark.parametrize("tta, views_of", [("ten-crop", ten_views), ("scale-rotate", scale_rotate_views)])
def test_ten_view_modes_average_the_ten_views_of_each_face(recognizer, fer_faces, tta, views_of):
    faces = fer_faces[0][:4]
    model = recognizer.classifier.model
    views = views_of(faces)
    want = np.mean([np.asarray(model.predict_on_batch(normalize(v))) for v in views], axis=0)
    ten_crop = EmotionRecognizer(recognizer.classifier, "haar", tta=tta)
    got = ten_crop.classify(faces)
    assert got.shape == (4, len(EMOTIONS)) and got == pytest.approx(want, abs=1e-5)
    assert got.sum(axis=1) == pytest.approx(np.ones(4), abs=1e-4)
    assert not np.allclose(got, recognizer.classify(faces), atol=1e-4)  # not the flip TTA's numbers
    assert ten_crop.classify(faces[:0]).shape == (0, len(EMOTIONS))


def test_unknown_tta_is_refused(tiny_model_path):
    with pytest.raises(FerlabError, match="unknown test-time augmentation 'ten'; choose one of flip, ten-crop, scale-rotate, none"):
        EmotionRecognizer.load(tiny_model_path, tta="ten")


def test_crops_follow_the_contract(recognizer, haar_faces):
    detections, crops = recognizer.crops(scene(haar_faces[0]))
    gray = cv2.cvtColor(scene(haar_faces[0]), cv2.COLOR_BGR2GRAY)
    assert np.array_equal(crops[0], crop_face(gray, detections[0], recognizer.contract))


def test_batch_classifies_all_faces_in_one_model_call(recognizer, haar_faces):
    calls, classifier = [], recognizer.classifier

    def counting(x):
        calls.append(tuple(x.shape))
        return classifier(x)

    batch = EmotionRecognizer(counting, "haar")
    images = [scene(haar_faces[0]), np.full((100, 100, 3), 90, np.uint8), scene(haar_faces[1], at=(40, 40))]
    results = batch.predict_batch(images)
    assert calls == [(4, 48, 48, 1)]  # two faces and their mirror images
    assert [len(r) for r in results] == [1, 0, 1]
    for picture, faces in zip(images, results):
        alone = recognizer.predict(picture)
        assert [f.box for f in alone] == [f.box for f in faces]
        for a, b in zip(alone, faces):
            assert list(a.probabilities.values()) == pytest.approx(list(b.probabilities.values()), abs=1e-5)
    assert batch.predict_batch([]) == []


def test_files_are_read_once_in_order_errors_in_place_and_chunks_classified_together(recognizer, haar_faces, tmp_path):
    calls, classifier = [], recognizer.classifier

    def counting(x):
        calls.append(len(x))
        return classifier(x)

    files = []
    for i, picture in enumerate([scene(haar_faces[0]), np.full((100, 100, 3), 90, np.uint8), scene(haar_faces[1])]):
        files.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(files[-1], picture)
    (tmp_path / "bad.png").write_text("not an image")
    files.insert(1, str(tmp_path / "bad.png"))
    reads = []
    out = list(EmotionRecognizer(counting, "haar").predict_files(files, chunk=3, on_read=lambda: reads.append(1)))
    assert [path for path, _, _ in out] == files and len(reads) == 4
    assert calls == [2, 2]  # chunk 1: one face (and its mirror image); chunk 2: the other
    (_, image, faces), (_, missing, error) = out[0], out[1]
    assert image.shape == (480, 640, 3) and len(faces) == 1 and faces[0].box == recognizer.predict(files[0])[0].box
    assert missing is None and isinstance(error, FerlabError) and "bad.png" in str(error)
    assert out[2][2] == [] and len(out[3][2]) == 1


def test_two_faces_are_found_largest_first(recognizer, haar_faces):
    frame = scene(haar_faces[0], side=120, at=(20, 60))
    big = cv2.resize(haar_faces[1], (200, 200), interpolation=cv2.INTER_CUBIC)
    frame[150:350, 380:580] = big[..., None]
    faces = recognizer.predict(frame)
    assert len(faces) == 2
    assert faces[0].box[2] > faces[1].box[2]
    assert faces[0].box[0] > 300 > faces[1].box[0]


# ---- models ---------------------------------------------------------------------------------


def test_missing_model_says_how_to_get_one(tmp_path):
    with pytest.raises(FerlabError, match=r"no model at .*nothing\.h5; pass --model pretrained:fast \(shipped with ferlab\)"):
        load_model(tmp_path / "nothing.h5")
    (tmp_path / "empty_bundle").mkdir()
    with pytest.raises(FerlabError, match="holds no model.h5 or model.tflite"):
        load_model(tmp_path / "empty_bundle")


def test_registry_uri_without_a_registry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    with pytest.raises(FerlabError, match=r"cannot resolve models:/ferlab@production: there is no MLflow registry"):
        load_model("models:/ferlab@production")
    assert not (tmp_path / "mlflow.db").exists()
    with pytest.raises(FerlabError, match=r"write models:/<name>@<alias>"):
        load_model("models:/ferlab/3")


def test_bundle_folder_carries_the_contract(tmp_path, tiny_model_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.h5").write_bytes(tiny_model_path.read_bytes())
    classifier, contract = load_model(bundle)
    assert contract == CropContract() and classifier.runtime == "keras"  # a bundle without model.tflite
    assert classifier(normalize(np.zeros((2, 48, 48), np.uint8))).shape == (2, 7)
    (bundle / "preprocessing.json").write_text(json.dumps(preprocessing() | {"face_margin": 0.25, "align": True}))
    (bundle / "labels.json").write_text(json.dumps({"emotions": [{"id": i, "name": e} for i, e in enumerate(EMOTIONS)]}))
    assert load_model(bundle)[1] == CropContract(margin=0.25, align=True)
    # a bundle may declare some of the seven (ferlab adapt --emotions), as many as its model has outputs
    (bundle / "labels.json").write_text(json.dumps({"emotions": [{"id": 0, "name": "happy"}, {"id": 1, "name": "sad"}]}))
    with pytest.raises(FerlabError, match=r"gives 7 probabilities, not one for each of happy, sad"):
        load_model(bundle)
    (bundle / "labels.json").write_text(json.dumps({"emotions": [{"id": 0, "name": "happy"}, {"id": 1, "name": "contempt"}]}))
    with pytest.raises(FerlabError, match="trained for other labels"):
        load_model(bundle)
    (bundle / "labels.json").write_text("{not json")
    with pytest.raises(FerlabError, match="has an unreadable labels.json"):
        load_model(bundle)


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "model.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(FerlabError, match="is not a readable Keras model"):
        load_model(bad)


# ---- tracking -------------------------------------------------------------------------------


def test_tracker_keeps_indices_of_moving_faces():
    tracker = Tracker()
    assert tracker.update([(100, 100, 80, 80), (400, 100, 80, 80)]) == [0, 1]
    assert tracker.update([(410, 105, 80, 80), (110, 100, 80, 80)]) == [1, 0]  # order swapped, both moved
    assert tracker.update([(120, 100, 80, 80)]) == [0]  # face 1 missed a frame
    assert tracker.update([(420, 110, 80, 80), (130, 100, 80, 80), (250, 300, 60, 60)]) == [1, 0, 2]
    assert tracker.update([(700, 400, 80, 80)]) == [3]  # far from everything: a new face


# ---- quality --------------------------------------------------------------------------------


def test_astronaut_is_one_happy_face():
    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image for its astronaut photo")
    faces = EmotionRecognizer.load("pretrained:fast").predict(skimage_data.astronaut(), color="rgb")
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert 150 < x + w / 2 < 300 and 50 < y + h / 2 < 200  # her face, not the flag or the suit
    assert faces[0].emotion == "happy", faces[0].probabilities


def test_with_own_detector_shares_the_model_not_the_detector(recognizer, haar_faces):
    """What each thread of the web service uses: OpenCV's cascade must not be shared."""
    twin = recognizer.with_own_detector()
    assert twin.detector is not recognizer.detector and twin.detector_name == recognizer.detector_name
    assert twin.classifier is recognizer.classifier and twin.contract == recognizer.contract
    image = scene(haar_faces[0])
    assert [f.to_dict() for f in twin.predict(image)] == [f.to_dict() for f in recognizer.predict(image)]


SHRINKS = [((640, 480), (192, 144)), ((1921, 1081), (192, 108)), ((300, 200), (192, 128)), ((96, 64), (192, 128))]


@pytest.mark.parametrize("size, want", SHRINKS)
def test_shrink_gives_the_asked_size_and_the_area_average(size, want):
    yy, xx = np.mgrid[: size[1], : size[0]]
    image = np.dstack([(xx * 255 // size[0]), (yy * 255 // size[1]), (xx + yy) % 256]).astype(np.uint8)
    small = detect.shrink(image, want)
    assert small.shape == (want[1], want[0], 3) and small.dtype == np.uint8
    direct = cv2.resize(image, want, interpolation=cv2.INTER_AREA if want[0] < size[0] else cv2.INTER_LINEAR)
    assert np.abs(small[..., :2].astype(int) - direct[..., :2]).mean() < 1.5  # the smooth ramps: the same picture


def test_batch_workers_load_the_second_look_as_told(tiny_model_path):
    from ferlab.inference.options import RecognizerOptions

    assert RecognizerOptions(model=str(tiny_model_path)).load().fill_pad == FILL_PAD
    assert RecognizerOptions(model=str(tiny_model_path), filling_faces=False).load().fill_pad == 0
