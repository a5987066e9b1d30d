"""Heat maps of what a decision rests on: occlusion (any runtime) and Grad-CAM (Keras), through
ferlab.inference.explain and EmotionRecognizer.explain; and, with the trained model, that they rest on the
mouth of smiling faces."""

import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from ferlab.contract import EMOTION_TO_ID, EMOTIONS
from ferlab.errors import FerlabError
from ferlab.inference import explain
from ferlab.inference.predict import EmotionRecognizer

HAPPY = EMOTION_TO_ID["happy"]
# Where a smile is on a 48x48 FER2013-framed face, and the frame around it.
MOUTH = (slice(30, 45), slice(12, 37))  # rows 30-44, columns 12-36


def mouth_and_border(heat: np.ndarray) -> tuple[float, float]:
    """Mean heat on the mouth and on the outer 4-pixel frame."""
    frame = np.ones(heat.shape, bool)
    frame[4:-4, 4:-4] = False
    return float(heat[MOUTH].mean()), float(heat[frame].mean())


def face_with(*blocks, background: int = 50, value: int = 230) -> np.ndarray:
    """A 48x48 grey face, dark but for bright blocks (rows, columns) given as slices."""
    face = np.full((48, 48), background, np.uint8)
    for rows, cols in blocks:
        face[rows, cols] = value
    return face


class BlockReader:
    """A stand-in classifier, happy as far as one block of the face (rows 32-39, columns 12-19) is
    bright; it counts its calls."""

    def __init__(self):
        self.calls = 0
        self.faces = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.faces += len(x)
        happy = 0.1 + 0.8 * x[:, 32:40, 12:20, 0].mean(axis=(1, 2))
        p = np.repeat(((1 - happy) / 6)[:, None], len(EMOTIONS), axis=1)
        p[:, HAPPY] = happy
        return p.astype(np.float32)


# ---- occlusion ------------------------------------------------------------------------------


@pytest.mark.parametrize("tta", ["none", "flip", "ten-crop", "scale-rotate"])
def test_occlusion_is_one_classifier_call_and_finds_what_the_classifier_reads(tta):
    reader = BlockReader()
    recognizer = EmotionRecognizer(reader, detector="haar", tta=tta)
    face = face_with((slice(32, 40), slice(12, 20)))
    (explained,) = recognizer.explain(face, face_crop=True, method="occlusion")
    assert reader.calls == 1  # the face and its 121 occluded copies (and their mirrors) in one batch
    assert reader.faces == 122 * {"none": 1, "flip": 2, "ten-crop": 10, "scale-rotate": 10}[tta]
    heat = explained.heatmap
    assert heat.shape == (48, 48) and heat.dtype == np.float32
    assert heat.min() == 0 and heat.max() == pytest.approx(1)
    assert heat[32:40, 12:20].mean() > 0.7  # hiding the block lowers `happy` most
    away = np.ones((48, 48), bool)
    away[28:44, 8:24] = False  # every 8x8 patch that touches the block lies in here
    assert heat[away].max() == 0
    assert explained.method == "occlusion" and explained.face.emotion == "happy"
    assert explained.face.box == (0, 0, 48, 48) and explained.region.shape == (48, 48, 3)


def test_occlusion_explains_the_probability_the_recognizer_reports():
    """With flip TTA the reported probability averages the face and its mirror image, and so does
    the map: a block the classifier never reads counts once its mirror image is the one read."""
    twins = face_with((slice(32, 40), slice(12, 20)), (slice(32, 40), slice(28, 36)))  # mirror images of each other
    maps = {}
    for tta in ("none", "flip"):
        recognizer = EmotionRecognizer(BlockReader(), detector="haar", tta=tta)
        (explained,) = recognizer.explain(twins, face_crop=True, method="occlusion")
        (predicted,) = recognizer.predict(twins, face_crop=True)
        assert explained.face.probabilities == pytest.approx(predicted.probabilities, abs=1e-6)
        maps[tta] = explained.heatmap
    assert maps["none"][32:40, 28:36].max() == 0 and maps["none"][32:40, 12:20].mean() > 0.7
    assert maps["flip"][32:40, 28:36].mean() > 0.7 and maps["flip"][32:40, 12:20].mean() > 0.7


def test_occlusion_maps_of_several_faces_and_of_none():
    faces = np.stack([face_with((slice(32, 40), slice(12, 20))), face_with(), face_with((slice(0, 8), slice(0, 8)))])
    batch = explain.occlusion_inputs(faces)
    assert batch.shape == (3 * 122, 48, 48) and np.array_equal(batch[:3], faces)
    probabilities, maps = explain.occlusion_maps(BlockReader()(batch[..., None] / 255), 3)
    assert probabilities.shape == (3, 7) and maps.shape == (3, 48, 48)
    assert maps[0].max() == pytest.approx(1)
    assert maps[1].max() == 0 and maps[2].max() == 0  # nothing hidden changes the answer: no heat, not noise
    probabilities, maps = explain.occlusion_maps(np.zeros((0, 7), np.float32), 0)
    assert probabilities.shape == (0, 7) and maps.shape == (0, 48, 48)


def test_methods_are_checked():
    recognizer = EmotionRecognizer(BlockReader(), detector="haar")
    assert explain.choose_method("auto", recognizer.classifier) == "occlusion"  # not a Keras model
    with pytest.raises(FerlabError, match="Grad-CAM needs the gradients of a Keras model"):
        recognizer.explain(face_with(), face_crop=True, method="gradcam")
    with pytest.raises(FerlabError, match="unknown explanation method 'lime'"):
        recognizer.explain(face_with(), face_crop=True, method="lime")


# ---- Grad-CAM -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spot_model():
    """A hand-set CNN shaped like ferlab_cnn (a 44x44 centre crop, conv blocks, global pooling, a
    softmax head) whose `happy` logit grows with the bright pixels it sees; Grad-CAM must find them."""
    import keras
    from keras import layers

    inputs = keras.Input((48, 48, 1))
    x = layers.Cropping2D(2)(inputs)
    x = layers.Conv2D(1, 3, padding="same", activation="relu")(x)  # bright pixels (over 0.5)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(2, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(7, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    conv1, conv2, head = (layer for layer in model.layers if layer.get_weights() and not isinstance(layer, layers.BatchNormalization))
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[1, 1] = 1
    conv1.set_weights([kernel, np.float32([-0.5])])
    kernel = np.zeros((3, 3, 1, 2), np.float32)
    kernel[1, 1, 0, 0] = 1
    conv2.set_weights([kernel, np.zeros(2, np.float32)])
    weights = np.zeros((2, 7), np.float32)
    weights[0, HAPPY] = 500
    head.set_weights([weights, np.zeros(7, np.float32)])
    return model


def spot(rows: slice, cols: slice) -> np.ndarray:
    return face_with((rows, cols), background=80, value=255)


def test_gradcam_lands_on_what_the_model_sees_in_input_coordinates(spot_model):
    faces = np.stack([spot(slice(30, 36), slice(10, 16)), spot(slice(2, 8), slice(20, 26)), spot(slice(0, 2), slice(20, 26))])
    maps = explain.gradcam_maps(spot_model, faces, np.full(3, HAPPY))
    assert maps.shape == (3, 48, 48) and maps.dtype == np.float32
    low_left, top, cropped = maps
    assert low_left.max() == pytest.approx(1)
    y, x = np.unravel_index(low_left.argmax(), low_left.shape)
    assert 29 <= y <= 36 and 9 <= x <= 16, (y, x)
    assert low_left[30:36, 10:16].mean() > 0.5 and low_left[:20].max() == 0 and low_left[:, 24:].max() == 0
    # the network crops 2 pixels on each side: that frame gets no heat, even next to a hot spot
    assert top[2:8, 20:26].mean() > 0.5 and top[:2].max() == 0
    assert cropped.max() == 0  # a spot in the cropped frame only: the model saw nothing, no heat
    # another emotion, whose score these pixels do not raise: no heat either
    assert explain.gradcam_maps(spot_model, faces[:1], np.zeros(1, int)).max() == 0


def test_gradcam_with_flip_maps_the_mirror_image_back(spot_model):
    face = spot(slice(30, 36), slice(10, 16))
    (heat,) = explain.gradcam_maps(spot_model, face[None], np.array([HAPPY]), tta="flip")
    assert heat[30:36, 10:16].mean() > 0.5
    assert heat[30:36, 32:38].max() == 0  # where the mirror image's spot was


def test_gradcam_with_ten_crop_moves_each_views_map_back_onto_the_face(spot_model):
    face = spot(slice(30, 36), slice(10, 16))
    (heat,) = explain.gradcam_maps(spot_model, face[None], np.array([HAPPY]), tta="ten-crop")
    (plain,) = explain.gradcam_maps(spot_model, face[None], np.array([HAPPY]))
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert 29 <= y <= 36 and 9 <= x <= 16, (y, x)  # not off by the views' 2-pixel shifts
    assert heat[30:36, 10:16].mean() > 0.5 and heat[:20].max() == 0
    assert heat[30:36, 32:38].max() == 0  # where the mirror images' spot was
    assert np.corrcoef(heat.ravel(), plain.ravel())[0, 1] > 0.8


def test_gradcam_with_scale_rotate_scales_and_turns_each_views_map_back_onto_the_face(spot_model):
    face = spot(slice(30, 36), slice(10, 16))
    (heat,) = explain.gradcam_maps(spot_model, face[None], np.array([HAPPY]), tta="scale-rotate")
    (plain,) = explain.gradcam_maps(spot_model, face[None], np.array([HAPPY]))
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert 29 <= y <= 36 and 9 <= x <= 16, (y, x)  # not where the scaled or turned views had it
    assert heat[30:36, 10:16].mean() > 0.5 and heat[:20].max() == 0
    assert heat[30:36, 32:38].max() == 0  # where the mirror images' spot was
    assert np.corrcoef(heat.ravel(), plain.ravel())[0, 1] > 0.8


def test_the_recognizer_explains_with_gradcam_and_occlusion_alike(spot_model):
    recognizer = EmotionRecognizer(spot_model, detector="haar")  # a Keras model: auto is Grad-CAM
    face = spot(slice(30, 36), slice(10, 16))
    (by_gradients,) = recognizer.explain(face, face_crop=True)
    (by_occlusion,) = recognizer.explain(face, face_crop=True, method="occlusion")
    assert (by_gradients.method, by_occlusion.method) == ("gradcam", "occlusion")
    assert by_gradients.face.emotion == by_occlusion.face.emotion == "happy"
    for heat in (by_gradients.heatmap, by_occlusion.heatmap):
        assert heat[30:36, 10:16].mean() > 0.5 and heat[:20].max() < 0.05


def test_one_dispatch_serves_the_recognizer_and_whoever_holds_the_faces(spot_model):
    """explain.heat_maps is what EmotionRecognizer.explain (and the service, on its model thread) call:
    the same probabilities and maps for the same faces, by the method asked for or chosen."""
    faces = np.stack([spot(slice(30, 36), slice(10, 16)), spot(slice(2, 8), slice(20, 26))])
    keras_recognizer = EmotionRecognizer(spot_model, detector="haar")
    for method, used in (("auto", "gradcam"), ("gradcam", "gradcam"), ("occlusion", "occlusion")):
        probabilities, maps = explain.heat_maps(keras_recognizer, faces, method)
        assert probabilities.shape == (2, 7) and maps.shape == (2, 48, 48)
        np.testing.assert_allclose(probabilities, keras_recognizer.classify(faces), atol=1e-6)
        (alone,) = keras_recognizer.explain(faces[0], face_crop=True, method=method)
        assert alone.method == used
        np.testing.assert_allclose(alone.heatmap, maps[0], atol=1e-5)
    reader = BlockReader()
    litert_like = EmotionRecognizer(reader, detector="haar", tta="flip")  # not a Keras model: auto is occlusion
    probabilities, maps = explain.heat_maps(litert_like, np.stack([face_with((slice(32, 40), slice(12, 20)))]))
    assert reader.calls == 1 and reader.faces == 2 * 122 and maps[0][32:40, 12:20].mean() > 0.7
    with pytest.raises(FerlabError, match="Grad-CAM needs the gradients of a Keras model"):
        explain.heat_maps(litert_like, faces, "gradcam")


# ---- rendering and the LiteRT runtime ----------------------------------------------------------


def test_overlay_colours_the_hot_region_on_the_face():
    heat = np.zeros((48, 48), np.float32)
    heat[30:40, 10:20] = 1
    small = explain.overlay(np.full((48, 48), 128, np.uint8), heat)
    assert small.shape == (192, 192, 3) and small.dtype == np.uint8  # a 48x48 crop, enlarged
    hot, cold = small[140, 60].astype(int), small[10, 10].astype(int)  # BGR
    assert hot[2] > hot[0] + 40  # red where the heat is
    assert cold[0] > cold[2] + 40  # blue elsewhere
    assert explain.overlay(np.zeros((900, 900, 3), np.uint8), heat).shape == (512, 512, 3)


def test_explain_on_the_litert_runtime_never_imports_tensorflow(tiny_bundle, tmp_path):
    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image for its astronaut photo")
    image = tmp_path / "astronaut.png"
    cv2.imwrite(str(image), cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    code = (
        "import sys; from ferlab.inference.predict import EmotionRecognizer; "
        f"(e,) = EmotionRecognizer.load({str(tiny_bundle)!r}).explain({str(image)!r}); "
        "print(e.method, e.heatmap.shape, round(float(e.heatmap.max()), 3), e.overlay().shape[2], "
        "'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["occlusion", "(48,", "48)", "1.0", "3", "False", "False"], out.stderr


# ---- with the trained model: a smile rests on the mouth ---------------------------------------------


def recognizer_for(method: str) -> EmotionRecognizer:
    """The shipped model: on LiteRT for occlusion; Grad-CAM needs gradients, so its Keras model.h5, which ships beside it."""
    return EmotionRecognizer.load("pretrained:fast", runtime="keras" if method == "gradcam" else "auto")


@pytest.fixture(scope="module")
def happy_test_faces(archive) -> np.ndarray:
    """The first 40 happy faces of PrivateTest, read from the archive."""
    with zipfile.ZipFile(archive) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith("test/happy/PrivateTest_"))[:40]
        return np.stack([cv2.imdecode(np.frombuffer(zf.read(n), np.uint8), cv2.IMREAD_GRAYSCALE) for n in names])


@pytest.mark.parametrize("method", ["occlusion", "gradcam"])
def test_a_smile_rests_on_the_mouth_not_the_frame(happy_test_faces, method):
    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image for its astronaut photo")
    trained = recognizer_for(method)
    (astronaut,) = trained.explain(skimage_data.astronaut(), color="rgb", method=method)
    assert astronaut.face.emotion == "happy"
    mouth, border = mouth_and_border(astronaut.heatmap)
    print(f"{method}: astronaut mouth {mouth:.3f}, border {border:.3f}")
    assert mouth > border

    explained = [e for face in happy_test_faces for e in trained.explain(face, face_crop=True, method=method)]
    smiling = [mouth_and_border(e.heatmap) for e in explained if e.face.emotion == "happy"]
    assert len(smiling) >= 30  # the model calls most of them happy
    mouths, borders = np.array(smiling).T
    print(
        f"{method}: {len(smiling)} happy PrivateTest faces, mean mouth {mouths.mean():.3f}, border {borders.mean():.3f}, "
        f"mouth above border on {(mouths > borders).mean():.0%}"
    )
    assert mouths.mean() > borders.mean()
    assert (mouths > borders).mean() >= 0.8
