"""The training input pipeline: batches of normalised faces, one-hot labels and class weights.

engine tensorflow: tf.data, augmented by ferlab.training.augment's stateless TensorFlow ops.
engine jax: NumPy batches in the order of a seeded permutation per epoch, augmented on the device
by ferlab.training.augment_jax under jit. Either way shuffling and augmentation depend only on the
seed and the batch number, so the stream is the same on every run, and a run resumed at a given
step continues it.
"""

import numpy as np

from ferlab import contract
from ferlab.contract import NUM_CLASSES
from ferlab.training import augment


def class_weight_table(weights: dict) -> list[float]:
    """The weight of each class id; the keys may be ints or, as JSON stores them, strings."""
    by_id = {int(k): float(v) for k, v in weights.items()}
    unknown = sorted(set(by_id) - set(range(NUM_CLASSES)))
    if unknown:
        raise ValueError(f"class weights for unknown class ids {unknown}")
    return [by_id.get(i, 1.0) for i in range(NUM_CLASSES)]


def _targets(faces, labels, weight_table):
    import tensorflow as tf

    targets = tf.one_hot(labels, NUM_CLASSES)
    if weight_table is not None:
        return faces, targets, tf.gather(weight_table, labels)
    return faces, targets


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int):
    """Batches of normalised faces and one-hot labels, in order (for selection and scoring)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32))).batch(batch_size)
    return ds.map(
        lambda faces, labels: _targets(tf.cast(faces[..., tf.newaxis], tf.float32) / contract.PIXEL_SCALE, labels, None),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)


def make_training_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, policy, weights: dict[int, float] | None = None, start_step: int = 0
):
    """An endless stream of shuffled, augmented batches (one epoch = ceil(N / batch) of them).

    Shuffling and augmentation depend only on the seed and the batch number, so the
    stream is the same on every run, and a run resumed at `start_step` continues it.
    """
    import tensorflow as tf

    weight_table = tf.constant(class_weight_table(weights), tf.float32) if weights else None
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size).repeat().enumerate()
    ds = ds.skip(start_step)

    def prepare(step, batch):
        faces, labels = batch
        faces = tf.cast(faces[..., tf.newaxis], tf.float32) / contract.PIXEL_SCALE
        faces = augment.apply(faces, tf.stack([tf.constant(seed, tf.int64), step]), policy)
        return _targets(faces, labels, weight_table)

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def feeds(engine: str, arrays, batch_size: int, seed: int, policy, weights: dict | None, start_step: int = 0):
    """(the endless augmented Training stream from `start_step` on, the PublicTest batches in order)."""
    x, y = arrays.x, arrays.y
    if engine == "jax":
        return (
            jax_training_batches(x["train"], y["train"], batch_size, seed, policy, weights, start_step),
            ordered_batches(x["val"], y["val"], batch_size),
        )
    return make_training_dataset(x["train"], y["train"], batch_size, seed, policy, weights, start_step), make_dataset(
        x["val"], y["val"], batch_size
    )


def jax_training_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, policy, weights: dict[int, float] | None = None, start_step: int = 0
):
    """make_training_dataset for the JAX engine: a generator of (faces, one-hot labels[, weights]) on the device.

    Epoch e takes the faces in the order of numpy's permutation seeded (seed, e); batch number s is
    augmented with the key fold_in(key(seed), s). A run resumed at `start_step` continues the stream.
    """
    import jax
    import jax.numpy as jnp

    from ferlab.training import augment_jax

    n = len(x)
    steps = int(np.ceil(n / batch_size))
    faces, labels = jnp.asarray(x), jnp.asarray(y.astype(np.int32))
    table = jnp.asarray(class_weight_table(weights), jnp.float32) if weights else None
    key = jax.random.key(seed)

    @jax.jit
    def prepare(index, step):
        picked = labels[index]
        out = (augment_jax.apply(faces[index], jax.random.fold_in(key, step), policy), jax.nn.one_hot(picked, NUM_CLASSES))
        return out + (table[picked],) if table is not None else out

    step, epoch, order = start_step, None, None
    while True:
        if step // steps != epoch:
            epoch = step // steps
            order = np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)
        first = (step % steps) * batch_size
        yield prepare(jnp.asarray(order[first : first + batch_size]), step)
        step += 1


def ordered_batches(x: np.ndarray, y: np.ndarray, batch_size: int):
    """make_dataset for the JAX engine: a keras.utils.PyDataset of normalised faces and one-hot labels, in order."""
    import keras

    class Ordered(keras.utils.PyDataset):
        def __len__(self):
            return int(np.ceil(len(x) / batch_size))

        def __getitem__(self, index):
            part = slice(index * batch_size, (index + 1) * batch_size)
            faces = x[part][..., np.newaxis].astype(np.float32) / contract.PIXEL_SCALE
            return faces, np.eye(NUM_CLASSES, dtype=np.float32)[y[part].astype(int)]

    return Ordered()
