"""Batch normalisation that trains on TensorFlow's fused kernel.

Keras 3 computes a training step's batch normalisation as separate ops (moments, then the
normalisation, each with its own gradient); TensorFlow's FusedBatchNormV3 does it in one kernel
and one gradient kernel. On 2 cores of an Intel Xeon with AMX that made a training step of
ferlab_cnn 18% faster in float32 on AVX2 kernels, 26% on AVX-512 ones and 38% under
mixed_bfloat16 (benchmarks/train_throughput.py, README Benchmarks). The layer is
keras.layers.BatchNormalization in everything else: the same weights, the same inference, the
same moving averages; `portable` swaps it back before a model is saved, so the .h5 holds plain
Keras layers and loads anywhere.
"""

import keras


@keras.saving.register_keras_serializable(package="ferlab")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization over the last axis of NHWC images; other cases, and other backends
    (benchmarks/gpu_long_recipe.py trains on JAX), take Keras' own computation."""

    def call(self, inputs, training=None, mask=None):
        fused = training and self.trainable and mask is None and len(inputs.shape) == 4 and self.axis in (-1, 3)
        if not fused or keras.backend.backend() != "tensorflow":
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, tf.float32)  # as Keras does: statistics in float32 whatever the policy
        channels = x.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels])
        beta = self.beta if self.center else tf.zeros([channels])
        empty = tf.constant([], tf.float32)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )
        # The kernel returns the variance with Bessel's correction; Keras averages the plain one.
        count = tf.cast(tf.size(x) // channels, tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


def portable(model):
    """`model` with every FusedBatchNormalization replaced by keras.layers.BatchNormalization
    (same config and weights); the model itself when it has none."""
    if not any(isinstance(layer, FusedBatchNormalization) for layer in model.layers):
        return model

    taken = {layer.name for layer in model.layers}

    def plain(layer):
        config = layer.get_config()
        if not isinstance(layer, FusedBatchNormalization):
            return layer.__class__.from_config(config)
        name = config["name"].replace("fused_", "", 1)  # the name Keras gives a BatchNormalization
        return keras.layers.BatchNormalization.from_config(config | ({"name": name} if name not in taken else {}))

    clone = keras.models.clone_model(model, clone_function=plain)
    clone.set_weights(model.get_weights())
    return clone
