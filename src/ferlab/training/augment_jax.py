"""ferlab.training.augment's policy in JAX, for train.engine=jax: the same operations as the TensorFlow ops,
drawn from JAX's random keys (so the same distribution, not the same faces as the TensorFlow engine).

Faces go in as uint8 (B, 48, 48) and come out normalised (B, 48, 48, 1) float32 in [0, 1]. Rotation
and zoom sample bilinearly, as TF's ImageProjectiveTransformV3 does; the low-resolution shrink is
one matrix per size on each axis (JAX resizes to no size drawn at run time), TF's area-then-bilinear
round trip exactly (tests/unit/test_engine.py holds both to TensorFlow's result).
"""

import numpy as np


def _area_matrix(size: int, side: int) -> np.ndarray:
    """(side, size): TF's area resize along one axis, each output pixel the overlap-weighted mean of
    the input pixels its footprint covers."""
    scale = size / side
    m = np.zeros((side, size))
    for out in range(side):
        lo, hi = out * scale, (out + 1) * scale
        for i in range(int(np.floor(lo)), min(int(np.ceil(hi)), size)):
            m[out, i] = (min(hi, i + 1) - max(lo, i)) / scale
    return m


def _bilinear_matrix(size: int, side: int) -> np.ndarray:
    """(size, side): TF's bilinear resize (half-pixel centres, edges clamped) from `side` up to `size`."""
    m = np.zeros((size, side))
    for out in range(size):
        src = (out + 0.5) * side / size - 0.5
        low = np.floor(src)
        lower, upper = int(max(low, 0)), int(min(np.ceil(src), side - 1))
        m[out, lower] += 1.0 - (src - low)
        m[out, upper] += src - low
    return m


def low_resolution_operators(size: int, min_px: int) -> np.ndarray:
    """(size - min_px, size, size) float32: for each side min_px..size-1, the matrix M such that
    M @ face @ M.T is ferlab.training.augment._low_resolution's shrink (area) and scale back
    (bilinear) of a face; both resizes are separable and linear."""
    return np.stack([_bilinear_matrix(size, side) @ _area_matrix(size, side) for side in range(min_px, size)]).astype(np.float32)


def apply(faces, key, aug):
    """ferlab.training.augment.apply in JAX: uint8 faces (B, 48, 48) -> float32 (B, 48, 48, 1) in [0, 1].
    Mirror (p=0.5), integer shift of up to `translate` px each way with TF's REFLECT border
    (d c b a | a b c d, numpy's 'symmetric'), the low-resolution shrink and scale back of a share of the
    faces, brightness +-b, contrast x[1-c, 1+c] about the mean, clip."""
    import jax
    import jax.numpy as jnp

    from ferlab.contract import PIXEL_SCALE

    k = jax.random.split(key, 4)
    b, t = faces.shape[0], int(aug.translate)
    x = faces.astype(jnp.float32) / PIXEL_SCALE
    if aug.horizontal_flip:
        x = jnp.where((jax.random.uniform(k[0], (b,)) < 0.5)[:, None, None], x[:, :, ::-1], x)
    if aug.rotation_degrees or aug.zoom:
        x = _turn_and_zoom(x, jax.random.split(k[1], 3), aug)
    elif t:
        shift = jax.random.randint(k[1], (b, 2), -t, t + 1)  # (dx, dy): output[i, j] = input[i + dy, j + dx]
        padded = jnp.pad(x, ((0, 0), (t, t), (t, t)), mode="symmetric")
        size = faces.shape[1:]
        x = jax.vmap(lambda img, s: jax.lax.dynamic_slice(img, (t + s[1], t + s[0]), size))(padded, shift)
    if aug.low_resolution_probability:  # own keys: the other draws stay those of a run without it
        shrunk = jax.random.uniform(jax.random.fold_in(k[0], 2), (b,)) < aug.low_resolution_probability
        operators = jnp.asarray(low_resolution_operators(faces.shape[1], aug.low_resolution_min_px))
        m = operators[jax.random.randint(jax.random.fold_in(k[0], 3), (), 0, len(operators))]  # one size per batch
        x = jnp.where(shrunk[:, None, None], jnp.einsum("ij,bjk,lk->bil", m, x, m), x)
    if aug.brightness:
        x = x + jax.random.uniform(k[2], (b, 1, 1), minval=-aug.brightness, maxval=aug.brightness)
    if aug.contrast:
        factor = jax.random.uniform(k[3], (b, 1, 1), minval=1 - aug.contrast, maxval=1 + aug.contrast)
        mean = x.mean(axis=(1, 2), keepdims=True)
        x = (x - mean) * factor + mean
    return jnp.clip(x, 0.0, 1.0)[..., None]


def _turn_and_zoom(x, keys, aug):
    """ferlab.training.augment._geometry in JAX: rotation by up to `rotation_degrees` and zoom by up to
    `zoom` about the centre (on `warp_probability` of the faces), then a whole-pixel shift of up
    to `translate`; bilinear sampling with the mirrored border (TF's REFLECT, scipy's 'reflect')."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.ndimage import map_coordinates

    b, size = x.shape[0], x.shape[1]
    angle = jax.random.uniform(keys[0], (b,), minval=-1.0, maxval=1.0) * jnp.deg2rad(aug.rotation_degrees)
    scale = 1.0 + jax.random.uniform(keys[1], (b,), minval=-1.0, maxval=1.0) * aug.zoom
    if aug.warp_probability < 1.0:  # the others sample whole pixels: an exact copy, as in TF
        warped = jax.random.uniform(jax.random.fold_in(keys[0], 1), (b,)) < aug.warp_probability
        angle, scale = jnp.where(warped, angle, 0.0), jnp.where(warped, scale, 1.0)
    shift = jax.random.randint(keys[2], (b, 2), -int(aug.translate), int(aug.translate) + 1).astype(jnp.float32)
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    centre = (size - 1) / 2.0
    rows, cols = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32) - centre, jnp.arange(size, dtype=jnp.float32) - centre, indexing="ij")

    def one(img, c, s_, d):
        x_in = c * cols - s_ * rows + centre + d[0]
        y_in = s_ * cols + c * rows + centre + d[1]
        return map_coordinates(img, [y_in, x_in], order=1, mode="reflect")

    return jax.vmap(one)(x, cos, sin, shift)
