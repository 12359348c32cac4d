"""YouTube-8M frame-level models (after youtube-8m's frame_level_models.py), in Keras 3.

Every model takes `(frames [B, T, D], lengths [B])` — frames past a clip's length are padding —
and returns per-class probabilities [B, C]. Frames are L2-normalised and padding is zeroed and
masked before any pooling, so what lies in the padding never changes an output. Inference
(`training=False`, the default) is deterministic: DBoF samples frames only in training, and
batch normalisation uses its moving statistics.
"""

from dataclasses import asdict, dataclass

import keras
import tensorflow as tf

MODEL_NAMES = ("logistic", "dbof", "lstm")
# DBoF's cluster and hidden activation: youtube-8m's --dbof_activation (sigmoid by default since
# 2019; relu6 was hard-coded before).
DBOF_ACTIVATIONS = {"sigmoid": tf.nn.sigmoid, "relu6": tf.nn.relu6}


@dataclass(frozen=True)
class HeadConfig:
    """What builds a head; the defaults are youtube-8m's current ones."""

    model: str
    num_classes: int
    feature_size: int
    max_frames: int
    cluster_size: int = 8192  # DBoF
    hidden_size: int = 1024  # DBoF
    sample_frames: int = 30  # DBoF: frames drawn at random per clip in training
    lstm_size: int = 1024
    lstm_layers: int = 2
    num_mixtures: int = 2  # MoE experts (DBoF, LSTM)
    l2_penalty: float = 1e-8
    dbof_activation: str = "sigmoid"

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r} (known: {', '.join(MODEL_NAMES)})")
        if self.dbof_activation not in DBOF_ACTIVATIONS:
            raise ValueError(
                f"unknown DBoF activation {self.dbof_activation!r} "
                f"(known: {', '.join(DBOF_ACTIVATIONS)})"
            )
        for name in ("num_classes", "feature_size", "max_frames", "cluster_size", "hidden_size",
                     "sample_frames", "lstm_size", "lstm_layers", "num_mixtures"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def as_dict(self) -> dict:
        return asdict(self)


def _l2(config: HeadConfig) -> keras.regularizers.Regularizer:
    return keras.regularizers.L2(config.l2_penalty)


class MixtureOfExperts(keras.layers.Layer):
    """Per class: softmax gates over `num_mixtures` sigmoid experts and one silent expert.
    As youtube-8m's MoeModel, the gates have no bias and the experts have one."""

    def __init__(self, config: HeadConfig, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = config.num_classes
        self.num_mixtures = config.num_mixtures
        self.gates = keras.layers.Dense(
            config.num_classes * (config.num_mixtures + 1), use_bias=False,
            kernel_regularizer=_l2(config),
        )
        self.experts = keras.layers.Dense(
            config.num_classes * config.num_mixtures, kernel_regularizer=_l2(config)
        )

    def call(self, x: tf.Tensor) -> tf.Tensor:
        gates = tf.nn.softmax(tf.reshape(self.gates(x), [-1, self.num_classes,
                                                         self.num_mixtures + 1]))
        experts = tf.sigmoid(tf.reshape(self.experts(x), [-1, self.num_classes,
                                                          self.num_mixtures]))
        return tf.reduce_sum(gates[:, :, : self.num_mixtures] * experts, axis=2)


class FrameModel(keras.Model):
    """The shared interface: normalise and mask the frames, then `classify`."""

    def __init__(self, config: HeadConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config

    def call(self, inputs: tuple[tf.Tensor, tf.Tensor], training: bool = False) -> tf.Tensor:
        frames, lengths = inputs
        lengths = tf.cast(lengths, tf.int32)
        mask = tf.sequence_mask(lengths, tf.shape(frames)[1])
        frames = tf.math.l2_normalize(frames, axis=2) * tf.cast(mask, frames.dtype)[:, :, None]
        return self.classify(frames, lengths, mask, training)

    def classify(
        self, frames: tf.Tensor, lengths: tf.Tensor, mask: tf.Tensor, training: bool
    ) -> tf.Tensor:
        raise NotImplementedError


class LogisticModel(FrameModel):
    """Mean of the valid frames, then one sigmoid layer."""

    def __init__(self, config: HeadConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.logistic = keras.layers.Dense(
            config.num_classes, activation="sigmoid", kernel_regularizer=_l2(config)
        )

    def classify(self, frames, lengths, mask, training):
        count = tf.cast(tf.maximum(lengths, 1), frames.dtype)[:, None]
        return self.logistic(tf.reduce_sum(frames, axis=1) / count)


def sample_random_frames(frames: tf.Tensor, lengths: tf.Tensor, count: int) -> tf.Tensor:
    """`count` frames per clip drawn uniformly, with replacement, from its valid frames."""
    batch = tf.shape(frames)[0]
    uniform = tf.random.uniform([batch, count])
    indices = tf.cast(uniform * tf.cast(lengths, tf.float32)[:, None], tf.int32)
    indices = tf.minimum(indices, tf.maximum(lengths, 1)[:, None] - 1)
    return tf.gather(frames, indices, batch_dims=1)


class DbofModel(FrameModel):
    """Deep bag of frames: (training: random frames) -> BN -> cluster layer -> BN -> activation
    -> max pooling over valid frames -> hidden layer -> BN -> activation -> mixture of experts
    (activation: `dbof_activation`, sigmoid or relu6)."""

    def __init__(self, config: HeadConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.input_norm = keras.layers.BatchNormalization()
        self.clusters = keras.layers.Dense(config.cluster_size, use_bias=False)
        self.cluster_norm = keras.layers.BatchNormalization()
        self.hidden = keras.layers.Dense(config.hidden_size, use_bias=False)
        self.hidden_norm = keras.layers.BatchNormalization()
        self.moe = MixtureOfExperts(config)
        self.activation = DBOF_ACTIVATIONS[config.dbof_activation]

    def classify(self, frames, lengths, mask, training):
        if training:
            frames = sample_random_frames(frames, lengths, self.config.sample_frames)
            mask = tf.ones(tf.shape(frames)[:2], tf.bool)
        x = self.input_norm(frames, training=training)
        x = self.activation(self.cluster_norm(self.clusters(x), training=training))
        # Both activations are >= 0, so zeroing padded frames leaves the max over valid ones.
        pooled = tf.reduce_max(x * tf.cast(mask, x.dtype)[:, :, None], axis=1)
        hidden = self.activation(self.hidden_norm(self.hidden(pooled), training=training))
        return self.moe(hidden)


class LstmModel(FrameModel):
    """Stacked LSTM over the valid frames; mixture of experts on the last valid output."""

    def __init__(self, config: HeadConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.lstms = [
            keras.layers.LSTM(config.lstm_size, return_sequences=i < config.lstm_layers - 1)
            for i in range(config.lstm_layers)
        ]
        self.moe = MixtureOfExperts(config)

    def classify(self, frames, lengths, mask, training):
        x = frames
        for lstm in self.lstms:
            x = lstm(x, mask=mask, training=training)
        return self.moe(x)


_CLASSES: dict[str, type[FrameModel]] = {
    "logistic": LogisticModel,
    "dbof": DbofModel,
    "lstm": LstmModel,
}


def build_model(config: HeadConfig) -> FrameModel:
    """A built model (its weights exist) for `config`."""
    model = _CLASSES[config.model](config)
    frames = tf.zeros([1, config.max_frames, config.feature_size])
    model((frames, tf.constant([1])), training=False)
    return model
