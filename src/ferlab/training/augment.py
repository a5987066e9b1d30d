"""On-the-fly training augmentation from the params.yaml policy, as stateless TensorFlow ops.

Every random draw is keyed on (seed, batch number), so a run is repeatable and a resumed
run augments its remaining batches exactly as an uninterrupted one would, however many
threads tf.data uses. Faces are normalised (N, 48, 48, 1) float32 in [0, 1].
"""

import dataclasses

from ferlab.config import Augment
from ferlab.contract import IMAGE_SIZE


def _geometry(tf, batch, size, policy: Augment, seeds):
    """ImageProjectiveTransformV3 rows mapping each output pixel to its input pixel:
    rotation and zoom about the centre, then an integer shift of up to `translate` pixels."""
    angle = tf.random.stateless_uniform([batch], seeds[0], -1.0, 1.0) * (policy.rotation_degrees * 3.141592653589793 / 180.0)
    scale = 1.0 + tf.random.stateless_uniform([batch], seeds[1], -1.0, 1.0) * policy.zoom
    if policy.warp_probability < 1.0:
        # The faces left unwarped sample whole pixels (angle 0, scale 1), so bilinear sampling copies
        # them exactly: the network keeps seeing faces as sharp as the test faces.
        warped = tf.random.stateless_uniform([batch], tf.random.experimental.stateless_fold_in(seeds[0], 1)) < policy.warp_probability
        angle = tf.where(warped, angle, 0.0)
        scale = tf.where(warped, scale, 1.0)
    shift = tf.cast(tf.random.stateless_uniform([batch, 2], seeds[2], -policy.translate, policy.translate + 1, dtype=tf.int32), tf.float32)
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    centre = (size - 1) / 2.0
    zeros = tf.zeros([batch])
    return tf.stack(
        [
            cos,
            -sin,
            centre - cos * centre + sin * centre + shift[:, 0],
            sin,
            cos,
            centre - sin * centre - cos * centre + shift[:, 1],
            zeros,
            zeros,
        ],
        axis=1,
    )


def _low_resolution(tf, faces, batch, size, policy: Augment, seed):
    """Shrink a share of the faces to one random size per batch (area average) and scale them back
    (bilinear), as a face found small in a photo or a webcam frame reaches the network."""
    fold_in = tf.random.experimental.stateless_fold_in
    shrunk = tf.random.stateless_uniform([batch], fold_in(seed, 2)) < policy.low_resolution_probability
    side = tf.random.stateless_uniform([], fold_in(seed, 3), policy.low_resolution_min_px, size, dtype=tf.int32)
    blurred = tf.image.resize(tf.image.resize(faces, [side, side], method="area"), [size, size], method="bilinear")
    return tf.where(shrunk[:, None, None, None], blurred, faces)


def apply(faces, seed, policy: Augment):
    """Augment a batch; `seed` is an int64 pair, e.g. (run seed, batch number)."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
    batch, size = tf.shape(faces)[0], faces.shape[1]
    if policy.horizontal_flip:
        mirror = tf.random.stateless_uniform([batch], seeds[0]) < 0.5
        faces = tf.where(mirror[:, None, None, None], tf.reverse(faces, axis=[2]), faces)
    if policy.translate or policy.rotation_degrees or policy.zoom:
        exact = not (policy.rotation_degrees or policy.zoom)  # whole-pixel shifts need no interpolation
        faces = tf.raw_ops.ImageProjectiveTransformV3(
            images=faces,
            transforms=_geometry(tf, batch, size, policy, seeds[1:4]),
            output_shape=[size, size],
            fill_value=0.0,
            interpolation="NEAREST" if exact else "BILINEAR",
            fill_mode="REFLECT",
        )
    if policy.low_resolution_probability:
        faces = _low_resolution(tf, faces, batch, size, policy, seeds[0])
    if policy.brightness:
        faces = faces + tf.random.stateless_uniform([batch, 1, 1, 1], seeds[4], -policy.brightness, policy.brightness)
    if policy.contrast:
        factor = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[5], 1.0 - policy.contrast, 1.0 + policy.contrast)
        mean = tf.reduce_mean(faces, axis=[1, 2, 3], keepdims=True)
        faces = (faces - mean) * factor + mean
    return tf.clip_by_value(faces, 0.0, 1.0)


def describe(policy: Augment) -> dict:
    """The resolved policy as written to reports/: every setting and the operations it becomes."""
    steps = [
        name
        for name, on in (
            ("mirror left-right (p=0.5)", policy.horizontal_flip),
            (f"rotate up to {policy.rotation_degrees:g} degrees", policy.rotation_degrees),
            (f"zoom by up to {policy.zoom:.0%}", policy.zoom),
            (
                f"rotation and zoom on {policy.warp_probability:.0%} of the faces",
                (policy.rotation_degrees or policy.zoom) and policy.warp_probability < 1.0,
            ),
            (f"shift up to {policy.translate} px each way (reflected border)", policy.translate),
            (
                f"shrink {policy.low_resolution_probability:.0%} of the faces to "
                f"{policy.low_resolution_min_px}..{IMAGE_SIZE - 1} px and back",
                policy.low_resolution_probability,
            ),
            (f"brightness +-{policy.brightness:g}", policy.brightness),
            (f"contrast x[{1 - policy.contrast:g}, {1 + policy.contrast:g}]", policy.contrast),
        )
        if on
    ]
    return {"settings": dataclasses.asdict(policy), "operations": steps}
