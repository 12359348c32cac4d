"""Model properties: padding never matters, inference is inference, frames are L2-normalised."""

import numpy as np
import pytest
import tensorflow as tf

from shared.models.frame_models import HeadConfig, build_model, sample_random_frames
from shared.training import losses

SMALL = {"cluster_size": 32, "hidden_size": 16, "lstm_size": 8, "sample_frames": 5,
         "lstm_layers": 2}
MODELS = ("logistic", "dbof", "lstm")


def small_model(name: str, **overrides):
    settings = {**SMALL, **overrides}
    return build_model(HeadConfig(name, num_classes=5, feature_size=16, max_frames=6, **settings))


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, np.ndarray]:
    frames = np.random.default_rng(0).normal(size=(4, 6, 16)).astype(np.float32)
    return frames, np.array([2, 6, 4, 1], np.int32)


@pytest.mark.parametrize("name", MODELS)
def test_padding_content_never_changes_the_output(name, inputs):
    model = small_model(name)
    frames, lengths = inputs
    garbage = frames.copy()
    for row, length in enumerate(lengths):
        garbage[row, length:] = 1000.0 * (row + 1)
    np.testing.assert_allclose(model((garbage, lengths)), model((frames, lengths)), atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_inference_is_deterministic_and_independent_of_the_batch(name, inputs):
    model = small_model(name)
    # a training step moves batch-norm statistics away from their initial values
    frames, lengths = inputs
    model((frames * 3 + 1, lengths), training=True)
    together = model((frames, lengths)).numpy()
    np.testing.assert_array_equal(together, model((frames, lengths)).numpy())
    alone = np.concatenate([model((frames[i : i + 1], lengths[i : i + 1])) for i in range(4)])
    np.testing.assert_allclose(alone, together, atol=1e-6)


def test_dbof_samples_frames_only_in_training(inputs):
    model = small_model("dbof")
    frames, lengths = inputs
    first = model((frames, lengths), training=True).numpy()
    second = model((frames, lengths), training=True).numpy()
    assert not np.allclose(first, second)


def test_frames_are_l2_normalised(inputs):
    frames, lengths = inputs
    for name in MODELS:
        model = small_model(name)
        scaled = frames * np.random.default_rng(1).uniform(0.1, 10, size=(4, 6, 1))
        np.testing.assert_allclose(
            model((scaled.astype(np.float32), lengths)), model((frames, lengths)), atol=1e-5
        )


def test_logistic_is_a_sigmoid_of_the_mean_of_valid_normalised_frames(inputs):
    model = small_model("logistic")
    frames, lengths = inputs
    kernel, bias = (w.numpy() for w in model.logistic.weights)
    normalised = frames / np.linalg.norm(frames, axis=2, keepdims=True)
    means = np.stack([normalised[i, :n].mean(axis=0) for i, n in enumerate(lengths)])
    expected = 1 / (1 + np.exp(-(means @ kernel + bias)))
    np.testing.assert_allclose(model((frames, lengths)), expected, rtol=1e-5)


def numpy_batch_norm(layer, x: np.ndarray) -> np.ndarray:
    gamma, beta, mean, variance = (w.numpy() for w in layer.weights)
    return gamma * (x - mean) / np.sqrt(variance + layer.epsilon) + beta


def numpy_moe(moe, x: np.ndarray, classes: int, mixtures: int) -> np.ndarray:
    """youtube-8m's MoeModel: bias-free gates, softmax over experts + a silent one."""
    (gate_kernel,) = (w.numpy() for w in moe.gates.weights)
    expert_kernel, expert_bias = (w.numpy() for w in moe.experts.weights)
    gates = (x @ gate_kernel).reshape(-1, classes, mixtures + 1)
    gates = np.exp(gates - gates.max(axis=2, keepdims=True))
    gates /= gates.sum(axis=2, keepdims=True)
    experts = 1 / (1 + np.exp(-(x @ expert_kernel + expert_bias).reshape(-1, classes, mixtures)))
    return (gates[:, :, :mixtures] * experts).sum(axis=2)


NUMPY_ACTIVATIONS = {"sigmoid": lambda x: 1 / (1 + np.exp(-x)),
                     "relu6": lambda x: np.clip(x, 0, 6)}


def test_dbof_defaults_to_youtube_8m_sigmoid():
    assert HeadConfig("dbof", 2, 16, 4).dbof_activation == "sigmoid"
    with pytest.raises(ValueError, match="unknown DBoF activation 'tanh'"):
        HeadConfig("dbof", 2, 16, 4, dbof_activation="tanh")


@pytest.mark.parametrize("activation", ["sigmoid", "relu6"])
def test_dbof_inference_by_hand(activation, inputs):
    model = small_model("dbof", dbof_activation=activation)
    frames, lengths = inputs
    model((frames * 2 - 1, lengths), training=True)  # moving statistics away from 0 and 1
    act = NUMPY_ACTIVATIONS[activation]
    normalised = frames / np.linalg.norm(frames, axis=2, keepdims=True)
    x = numpy_batch_norm(model.input_norm, normalised)
    x = act(numpy_batch_norm(model.cluster_norm, x @ model.clusters.kernel.numpy()))
    pooled = np.stack([x[i, :n].max(axis=0) for i, n in enumerate(lengths)])
    hidden = act(numpy_batch_norm(model.hidden_norm, pooled @ model.hidden.kernel.numpy()))
    expected = numpy_moe(model.moe, hidden, 5, SMALL.get("num_mixtures", 2))
    np.testing.assert_allclose(model((frames, lengths)), expected, rtol=1e-4, atol=1e-6)


def test_moe_gates_have_no_bias_and_experts_have_one():
    model = small_model("lstm")
    assert [w.name for w in model.moe.gates.weights] == ["kernel"]
    assert [w.name for w in model.moe.experts.weights] == ["kernel", "bias"]


def test_random_frames_come_from_the_valid_ones():
    frames = tf.constant(np.arange(2 * 5, dtype=np.float32).reshape(2, 5, 1))
    picked = sample_random_frames(frames, tf.constant([2, 5]), 200).numpy()[..., 0]
    assert set(picked[0]) == {0.0, 1.0}
    assert set(picked[1]) == {5.0, 6.0, 7.0, 8.0, 9.0}


def test_losses_by_hand():
    labels = tf.constant([[1.0, 0.0]])
    predictions = tf.constant([[0.8, 0.4]])
    expected_ce = -(np.log(0.8 + 1e-6) + np.log(0.6 + 1e-6))
    assert float(losses.cross_entropy(labels, predictions)) == pytest.approx(expected_ce, 1e-5)
    assert float(losses.hinge(labels, predictions)) == pytest.approx(0.2 + 1.4)
    logits = np.log([0.8 / 0.2, 0.4 / 0.6])
    expected_softmax = -(logits[0] - np.log(np.exp(logits).sum()))
    assert float(losses.softmax(labels, predictions)) == pytest.approx(expected_softmax, 1e-5)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        HeadConfig("svm", 2, 16, 4)
    with pytest.raises(ValueError, match="num_classes must be positive"):
        HeadConfig("dbof", 0, 16, 4)
