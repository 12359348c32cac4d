"""Losses over predicted probabilities [B, C] and multi-hot labels [B, C] (as youtube-8m's).

- cross_entropy (default): per-class binary cross-entropy, summed over classes.
- hinge: per-class hinge max(0, 1 - y * p) with y in {-1, +1}, summed over classes.
- softmax: cross-entropy between the label distribution (labels / their sum) and the softmax of
  the predictions' logits log(p / (1 - p)). youtube-8m takes the softmax of the probabilities
  themselves, which squeezes every score into (0, 1) and barely trains; the logits restore a
  real softmax classifier for single-label data.
Each returns the mean over the batch.
"""

from collections.abc import Callable

import tensorflow as tf

EPSILON = 1e-6

Loss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def cross_entropy(labels: tf.Tensor, predictions: tf.Tensor) -> tf.Tensor:
    labels = tf.cast(labels, tf.float32)
    per_class = labels * tf.math.log(predictions + EPSILON) + (1.0 - labels) * tf.math.log(
        1.0 - predictions + EPSILON
    )
    return tf.reduce_mean(-tf.reduce_sum(per_class, axis=1))


def hinge(labels: tf.Tensor, predictions: tf.Tensor) -> tf.Tensor:
    signs = 2.0 * tf.cast(labels, tf.float32) - 1.0
    return tf.reduce_mean(tf.reduce_sum(tf.nn.relu(1.0 - signs * predictions), axis=1))


def softmax(labels: tf.Tensor, predictions: tf.Tensor) -> tf.Tensor:
    labels = tf.cast(labels, tf.float32)
    distribution = labels / tf.maximum(tf.reduce_sum(labels, axis=1, keepdims=True), EPSILON)
    clipped = tf.clip_by_value(predictions, EPSILON, 1.0 - EPSILON)
    logits = tf.math.log(clipped) - tf.math.log(1.0 - clipped)
    return tf.reduce_mean(-tf.reduce_sum(distribution * tf.nn.log_softmax(logits), axis=1))


LOSSES: dict[str, Loss] = {"cross_entropy": cross_entropy, "hinge": hinge, "softmax": softmax}


def get(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r} (known: {', '.join(LOSSES)})") from None
