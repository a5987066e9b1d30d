"""Heat maps of what a decision rests on: which pixels of the 48x48 face moved the top emotion.

Two methods, each giving a (48, 48) float32 map in [0, 1] on the model input's pixels:

- occlusion: a patch of the face's mean grey slides over the face; the map is how much
  the top emotion's probability drops while a pixel is covered. It only needs the
  classifier's answers, so it works on every runtime (LiteRT included), and all the
  occluded copies go through the classifier in one call.
- gradcam (Grad-CAM, Selvaraju et al. 2017): the last convolutional feature map, weighted
  by the gradient of the top emotion's score, kept where positive. It needs the Keras
  model (TensorFlow, imported only then) and one forward and backward pass.

`overlay` blends a map, as a colour map, onto the face as the photo shows it.
"""

import sys

import cv2
import numpy as np

from ferlab.contract import IMAGE_SIZE, normalize, scale_rotate_matrices, ten_view_offsets, tta_views
from ferlab.errors import FerlabError

METHODS = ("auto", "occlusion", "gradcam")
# An 8x8 patch is about an eye, a brow or a mouth corner at FER2013's framing: small enough
# to tell the parts of a face apart, large enough that hiding it changes the answer. A stride
# of 4 overlaps the patches by half, so every pixel is covered 1 to 4 times and the map is
# smooth: 11 x 11 = 121 occluded copies per face (twice that with flip TTA, ten times with ten-crop), one batch.
PATCH = 8
STRIDE = 4
OVERLAY_SIDE = (192, 512)  # rendered face images: small faces are enlarged, large ones shrunk


def choose_method(method: str, classifier) -> str:
    """ "occlusion" or "gradcam" for a classifier; auto: Grad-CAM where a Keras model is loaded."""
    if method not in METHODS:
        raise FerlabError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}.")
    keras_model = hasattr(getattr(classifier, "model", None), "count_params") and "tensorflow" in sys.modules
    if method == "auto":
        return "gradcam" if keras_model else "occlusion"
    if method == "gradcam" and not keras_model:
        runtime = getattr(classifier, "runtime", None) or "this"
        raise FerlabError(
            f"Grad-CAM needs the gradients of a Keras model, which the {runtime} runtime does not give; "
            "use --runtime keras with a .h5 file or a bundle, or --method occlusion."
        )
    return method


def heat_maps(recognizer, faces: np.ndarray, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """The one dispatch of the methods: (N, 48, 48) uint8 faces -> (their probabilities (N, 7), as the
    recognizer's classify gives them, TTA included; their maps (N, 48, 48)), by `method` (as
    choose_method takes it) for `recognizer` (an EmotionRecognizer: its classify, classifier and tta).
    Occlusion classifies the faces and all their occluded copies in one call; Grad-CAM classifies the
    faces, then takes the gradients of the Keras model. Both use the model: in the service, call it on
    the model's thread."""
    used = choose_method(method, recognizer.classifier)
    if used == "occlusion":
        return occlusion_maps(recognizer.classify(occlusion_inputs(faces)), len(faces))
    probabilities = recognizer.classify(faces)
    return probabilities, gradcam_maps(recognizer.classifier.model, faces, probabilities.argmax(axis=1), recognizer.tta)


def normalised(heat: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] by its maximum; all zeros stays all zeros (nothing moved the decision)."""
    heat = np.maximum(np.asarray(heat, np.float32), 0)
    top = heat.max()
    return heat / top if top > 0 else heat


# ---- occlusion ----------------------------------------------------------------------------


def _corners(patch: int, stride: int) -> list[int]:
    corners = list(range(0, IMAGE_SIZE - patch + 1, stride))
    if corners[-1] != IMAGE_SIZE - patch:  # the last row and column are covered too
        corners.append(IMAGE_SIZE - patch)
    return corners


def occlusion_inputs(faces: np.ndarray, patch: int = PATCH, stride: int = STRIDE) -> np.ndarray:
    """(N, 48, 48) uint8 faces -> the batch to classify: the N faces, then each face's occluded copies."""
    corners = _corners(patch, stride)
    copies = np.repeat(faces[:, np.newaxis], len(corners) ** 2, axis=1)  # (N, P, 48, 48)
    means = faces.reshape(len(faces), -1).mean(axis=1).round().astype(np.uint8)
    k = 0
    for y in corners:
        for x in corners:
            copies[:, k, y : y + patch, x : x + patch] = means[:, np.newaxis, np.newaxis]
            k += 1
    return np.concatenate([faces, copies.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)])


def occlusion_maps(probabilities: np.ndarray, count: int, patch: int = PATCH, stride: int = STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's answers for occlusion_inputs of `count` faces -> (the faces' own
    probabilities (N, 7), their maps (N, 48, 48)): per pixel, the mean drop of the top
    emotion's probability over the patches that cover it (rises count as 0)."""
    corners = _corners(patch, stride)
    own = probabilities[:count]
    if count == 0:
        return own, np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    occluded = probabilities[count:].reshape(count, len(corners) ** 2, -1)
    top = own.argmax(axis=1)
    drops = own[np.arange(count), top][:, np.newaxis] - occluded[np.arange(count), :, top]  # (N, P)
    heat = np.zeros((count, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    covered = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    k = 0
    for y in corners:
        for x in corners:
            heat[:, y : y + patch, x : x + patch] += np.maximum(drops[:, k], 0)[:, np.newaxis, np.newaxis]
            covered[y : y + patch, x : x + patch] += 1
            k += 1
    return own, np.stack([normalised(h / covered) for h in heat])


# ---- Grad-CAM -----------------------------------------------------------------------------


def _feature_layers(model) -> tuple:
    """(the last 2D convolution, the layer whose output is its rectified feature map): the last
    of the layers right after it that keep its shape (batch normalisation, activation). Grad-CAM
    weighs activations, which are >= 0; a convolution followed by its normalisation and ReLU (as
    in ferlab_cnn) has raw outputs whose sign the normalisation's shift still changes (measured
    on the astronaut: mean heat 0.0 on the mouth from the raw outputs, 0.10 from the block's)."""
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)
    layers = model.layers
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, kinds) and len(layer.output.shape) == 4]
    if not convs:
        raise FerlabError(f"the model {model.name} has no 2D convolutional layer, which Grad-CAM needs; use --method occlusion.")
    conv = end = convs[-1]
    while end + 1 < len(layers) and tuple(layers[end + 1].output.shape) == tuple(layers[conv].output.shape):
        end += 1
    return layers[conv], layers[end]


def _feature_grid(model, conv) -> tuple[float, float, tuple[int, int]]:
    """Where the cells of `conv`'s feature map lie on the 48x48 input, walking the layers up to it:
    (input position of cell 0's centre, input pixels per cell, (first, end) of the rows the
    network sees at all, cropping removed). Rows and columns alike (square crops), and a chain of
    layers, as ferlab's networks are."""
    import keras

    first, stride, seen = 0.0, 1.0, [0, IMAGE_SIZE]
    for layer in model.layers:
        if isinstance(layer, keras.layers.Cropping2D):
            (top, bottom), _ = layer.cropping
            first += stride * top
            seen = [seen[0] + top, seen[1] - bottom]
        elif hasattr(layer, "kernel_size") or hasattr(layer, "pool_size"):
            size = (layer.kernel_size if hasattr(layer, "kernel_size") else layer.pool_size)[0]
            step = layer.strides[0]
            pad = max(size - step, 0) // 2 if layer.padding == "same" else 0
            first += stride * ((size - 1) / 2 - pad)
            stride *= step
        if layer is conv:
            return first, stride, tuple(seen)
    raise ValueError("the convolutional layer is not in the model")


def _score_model(model):
    """(model of the inputs -> [feature map, scores], the last convolution, the softmax head or None).
    Scores are the logits when the model ends in a softmax Dense layer: the softmax saturates on
    confident faces, so its gradient all but vanishes exactly where the answer is clearest."""
    import keras

    conv, features = _feature_layers(model)
    head = model.layers[-1]
    logits = isinstance(head, keras.layers.Dense) and getattr(head.activation, "__name__", "") == "softmax"
    outputs = [features.output, head.input if logits else model.outputs[0]]
    return keras.Model(model.inputs, outputs), conv, head if logits else None


def gradcam_maps(model, faces: np.ndarray, targets: np.ndarray, tta: str = "none") -> np.ndarray:
    """(N, 48, 48) uint8 faces and the emotion id to explain for each -> (N, 48, 48) maps.

    tta: the recognizer's test-time augmentation. With "flip", "ten-crop" or "scale-rotate" it
    averages views of each face, so the map is the mean of the views' maps, each mirrored and
    moved (or scaled and turned) back onto the face."""
    from ferlab.quiet import import_tensorflow

    tf = import_tensorflow()
    if len(faces) == 0:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    score_model, conv, head = _score_model(model)
    views = tta_views(faces, tta)
    x = normalize(views.reshape(-1, IMAGE_SIZE, IMAGE_SIZE))
    targets = np.tile(targets, len(views))
    with tf.GradientTape() as tape:
        features, scores = score_model(tf.constant(x), training=False)
        if head is not None:
            scores = tf.matmul(scores, head.kernel) + (head.bias if head.use_bias else 0)
        chosen = tf.gather(scores, tf.constant(targets, tf.int32), axis=1, batch_dims=1)
    gradients = tape.gradient(chosen, features).numpy()
    weights = gradients.mean(axis=(1, 2))  # (N, channels): the gradient pooled over the map
    cams = np.maximum(np.einsum("nhwc,nc->nhw", features.numpy(), weights), 0)
    maps = _on_input(cams, *_feature_grid(model, conv)).reshape(len(views), len(faces), IMAGE_SIZE, IMAGE_SIZE)
    maps = np.mean([_onto_face(m, k, tta) for k, m in enumerate(maps)], axis=0)
    return np.stack([normalised(m) for m in maps])


def _onto_face(maps: np.ndarray, view: int, tta: str) -> np.ndarray:
    """Maps (N, 48, 48) of view number `view` (tta_views' order) put back on the face's pixels;
    pixels that view did not show get 0."""
    if tta == "none":
        return maps
    if tta == "flip":
        return maps[:, :, ::-1] if view else maps
    if tta == "scale-rotate":
        warps = scale_rotate_matrices()
        if view >= len(warps):  # the mirror of view - 5
            maps, view = maps[:, :, ::-1], view - len(warps)
        if view == 0:
            return maps
        back = cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR
        return np.stack([cv2.warpAffine(m, warps[view], (IMAGE_SIZE, IMAGE_SIZE), flags=back, borderValue=0) for m in maps])
    offsets = ten_view_offsets()
    if view >= len(offsets):  # the mirror of view - 5
        maps, view = maps[:, :, ::-1], view - len(offsets)
    dy, dx = offsets[view]  # the view's pixel (i, j) shows the face's (i + dy, j + dx)
    moved = np.zeros_like(maps)
    n = IMAGE_SIZE
    moved[:, max(dy, 0) : n + min(dy, 0), max(dx, 0) : n + min(dx, 0)] = maps[:, max(-dy, 0) : n - max(dy, 0), max(-dx, 0) : n - max(dx, 0)]
    return moved


def _on_input(cams: np.ndarray, first: float, stride: float, seen: tuple[int, int]) -> np.ndarray:
    """Feature-map cells (N, h, w) -> (N, 48, 48): each cell at its centre on the input, bilinear
    in between, the edge cells held beyond; pixels the network never sees (cropped) get 0."""
    to_input = np.float32([[stride, 0, first], [0, stride, first]])
    maps = np.stack(
        [
            cv2.warpAffine(
                cam.astype(np.float32), to_input, (IMAGE_SIZE, IMAGE_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            for cam in cams
        ]
    )
    outside = np.ones((IMAGE_SIZE, IMAGE_SIZE), bool)
    outside[seen[0] : seen[1], seen[0] : seen[1]] = False
    maps[:, outside] = 0
    return maps


# ---- rendering ----------------------------------------------------------------------------


def overlay(face: np.ndarray, heat: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """A BGR face image (the photo's square, or the 48x48 crop) with the map blended on it
    as OpenCV's JET colour map (red: what moved the decision most); side within OVERLAY_SIDE."""
    if face.ndim == 2:
        face = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
    side = int(np.clip(face.shape[0], *OVERLAY_SIDE))
    if side != face.shape[0]:
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if side < face.shape[0] else cv2.INTER_CUBIC)
    heat = cv2.resize(np.asarray(heat, np.float32), (side, side), interpolation=cv2.INTER_LINEAR)  # cubic overshoots at block edges
    colours = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)
    return cv2.addWeighted(face, 1 - opacity, colours, opacity, 0)
