"""VGGish: architecture, loader for Google's TF1 checkpoint format, PCA postprocessor.

Google's files cannot be downloaded here, so the tests write a checkpoint the way vggish_slim.py
saves one (TF1 graph, tf.compat.v1 Saver, the official variable names; V1 single-file format as
Google's file is) with seeded random values, and check the Keras network against a plain numpy
forward pass written from the architecture.
"""

from pathlib import Path

import numpy as np
import pytest

from shared import frontend, params
from shared.models import ModelError, vggish
from shared.models.vggish import tf  # after vggish has quietened TensorFlow's start-up

# The official checkpoint's variables and shapes, in network order.
OFFICIAL_SHAPES: dict[str, tuple[int, ...]] = {
    "vggish/conv1/weights": (3, 3, 1, 64),
    "vggish/conv1/biases": (64,),
    "vggish/conv2/weights": (3, 3, 64, 128),
    "vggish/conv2/biases": (128,),
    "vggish/conv3/conv3_1/weights": (3, 3, 128, 256),
    "vggish/conv3/conv3_1/biases": (256,),
    "vggish/conv3/conv3_2/weights": (3, 3, 256, 256),
    "vggish/conv3/conv3_2/biases": (256,),
    "vggish/conv4/conv4_1/weights": (3, 3, 256, 512),
    "vggish/conv4/conv4_1/biases": (512,),
    "vggish/conv4/conv4_2/weights": (3, 3, 512, 512),
    "vggish/conv4/conv4_2/biases": (512,),
    "vggish/fc1/fc1_1/weights": (12288, 4096),
    "vggish/fc1/fc1_1/biases": (4096,),
    "vggish/fc1/fc1_2/weights": (4096, 4096),
    "vggish/fc1/fc1_2/biases": (4096,),
    "vggish/fc2/weights": (4096, 128),
    "vggish/fc2/biases": (128,),
}
CONV_SCOPES = [
    "vggish/conv1",
    "vggish/conv2",
    "vggish/conv3/conv3_1",
    "vggish/conv3/conv3_2",
    "vggish/conv4/conv4_1",
    "vggish/conv4/conv4_2",
]
POOL_AFTER = {"vggish/conv1", "vggish/conv2", "vggish/conv3/conv3_2", "vggish/conv4/conv4_2"}


def write_tf1_checkpoint(prefix: Path, variables: dict[str, np.ndarray], *, v1: bool) -> None:
    """Save `variables` under their names with a TF1 Saver, as vggish_slim's graph would."""
    feeds = {}
    with tf.Graph().as_default():
        for name, value in variables.items():
            holder = tf.compat.v1.placeholder(tf.float32, value.shape)
            tf.compat.v1.get_variable(name, initializer=holder)
            feeds[holder] = value
        version = tf.compat.v1.train.SaverDef.V1 if v1 else tf.compat.v1.train.SaverDef.V2
        saver = tf.compat.v1.train.Saver(write_version=version)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer(), feed_dict=feeds)
            saver.save(session, str(prefix), write_meta_graph=False, write_state=False)


def seeded_weights(seed: int = 7) -> dict[str, np.ndarray]:
    """He-scaled kernels (activations stay near unit size through 8 layers) and small biases."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in OFFICIAL_SHAPES.items():
        if name.endswith("/weights"):
            fan_in = int(np.prod(shape[:-1]))
            scale = np.float32(np.sqrt(2.0 / fan_in))
            weights[name] = rng.standard_normal(shape, np.float32) * scale
        else:
            weights[name] = rng.standard_normal(shape, np.float32) * np.float32(0.1)
    return weights


def test_checkpoint_writer_makes_v1_single_files(tmp_path):
    write_tf1_checkpoint(tmp_path / "tiny.ckpt", {"vggish/fc2/biases": np.ones(128)}, v1=True)
    assert (tmp_path / "tiny.ckpt").is_file()
    assert not (tmp_path / "tiny.ckpt.index").exists()


# --- numpy reference forward pass ---------------------------------------------------------


def conv3x3_same_relu(images: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """[H, W, C] * [3, 3, C, O] with zero padding, stride 1, then ReLU."""
    padded = np.pad(images, ((1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))
    # windows: [H, W, C, 3, 3]
    return np.maximum(np.tensordot(windows, kernel, axes=([3, 4, 2], [0, 1, 2])) + bias, 0.0)


def max_pool_2x2(images: np.ndarray) -> np.ndarray:
    height, width, channels = images.shape
    return images.reshape(height // 2, 2, width // 2, 2, channels).max(axis=(1, 3))


def numpy_vggish(log_mels: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """Log-mel patches [n, 96, 64] -> fc2 [n, 128], in float64."""
    w = {name: value.astype(np.float64) for name, value in weights.items()}
    flattened = []
    for log_mel in log_mels:
        net = log_mel.astype(np.float64)[:, :, None]
        for scope in CONV_SCOPES:
            net = conv3x3_same_relu(net, w[f"{scope}/weights"], w[f"{scope}/biases"])
            if scope in POOL_AFTER:
                net = max_pool_2x2(net)
        flattened.append(net.reshape(-1))
    net = np.stack(flattened)
    for scope in ("vggish/fc1/fc1_1", "vggish/fc1/fc1_2"):
        net = np.maximum(net @ w[f"{scope}/weights"] + w[f"{scope}/biases"], 0.0)
    return net @ w["vggish/fc2/weights"] + w["vggish/fc2/biases"]


def test_numpy_reference_conv_matches_direct_sum():
    rng = np.random.default_rng(0)
    images, kernel, bias = rng.normal(size=(5, 4, 2)), rng.normal(size=(3, 3, 2, 3)), rng.normal(3)
    padded = np.pad(images, ((1, 1), (1, 1), (0, 0)))
    direct = np.zeros((5, 4, 3))
    for row in range(5):
        for col in range(4):
            patch = padded[row : row + 3, col : col + 3, :]
            direct[row, col] = np.einsum("ijc,ijco->o", patch, kernel) + bias
    np.testing.assert_allclose(conv3x3_same_relu(images, kernel, bias), np.maximum(direct, 0))


# --- architecture ---------------------------------------------------------------------------


def test_architecture_has_official_parameter_count_and_variable_names():
    model = vggish.build_vggish()
    assert model.count_params() == 72_141_184
    assert model.input_shape == (None, params.PATCH_FRAMES, params.MEL_BANDS, 1)
    assert model.output_shape == (None, params.VGGISH_EMBEDDING_SIZE)
    shapes = {name: tuple(v.shape) for name, v in vggish.checkpoint_variables(model).items()}
    assert shapes == OFFICIAL_SHAPES
    assert model.get_layer("fc2").activation.__name__ == "linear"


# --- checkpoint errors (tiny V2 checkpoints: the loader reads both formats) ----------------


def scalar_stand_ins(names) -> dict[str, np.ndarray]:
    return {name: np.zeros((), np.float32) for name in names}


def test_checkpoint_lacking_a_variable_names_it(tmp_path):
    prefix = tmp_path / "vggish_model.ckpt"
    write_tf1_checkpoint(
        prefix, scalar_stand_ins(set(OFFICIAL_SHAPES) - {"vggish/fc2/biases"}), v1=False
    )
    with pytest.raises(ModelError, match=r"lacks vggish/fc2/biases$"):
        vggish.load_checkpoint(vggish.build_vggish(), prefix)


def test_checkpoint_with_a_misshaped_variable_names_it(tmp_path):
    prefix = tmp_path / "vggish_model.ckpt"
    write_tf1_checkpoint(prefix, scalar_stand_ins(OFFICIAL_SHAPES), v1=False)
    expected = r"vggish/conv1/weights has shape \(\), VGGish needs \(3, 3, 1, 64\)$"
    with pytest.raises(ModelError, match=expected):
        vggish.load_checkpoint(vggish.build_vggish(), prefix)


def test_unreadable_checkpoint_is_a_model_error(tmp_path):
    garbage = tmp_path / "vggish_model.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read VGGish checkpoint") as raised:
        vggish.load_checkpoint(vggish.build_vggish(), garbage)
    assert "\n" not in str(raised.value)


# --- PCA postprocessing and quantisation ----------------------------------------------------


def test_quantize_clips_scales_and_truncates_like_vggish_postprocess():
    whitened = np.array([[-3.0, -2.0, -1.99, 0.0, 1.0, 1.999, 2.0, 5.0]])
    # (clip(x, -2, 2) + 2) * 255 / 4, truncated: 0, 0, 0.6375, 127.5, 191.25, 254.936, 255, 255
    expected = np.array([[0, 0, 0, 127, 191, 254, 255, 255]], np.uint8)
    quantized = vggish.quantize_embeddings(whitened)
    assert quantized.dtype == np.uint8
    np.testing.assert_array_equal(quantized, expected)


def test_dequantize_is_youtube8m_dequantize():
    quantized = np.array([[0, 1, 127, 128, 255]], np.uint8)
    # q * 4 / 255 + (4 / 512 - 2)
    expected = np.array([[-1.9921875, -1.9765012, -3.0637255e-05, 0.0156556, 2.0078125]])
    dequantized = vggish.dequantize_embeddings(quantized)
    assert dequantized.dtype == np.float32
    np.testing.assert_allclose(dequantized, expected, atol=1e-6)


def test_dequantize_lands_in_the_bin_quantize_filled():
    values = np.linspace(-2.0, 1.99, 10_001)[None, :]
    roundtrip = vggish.dequantize_embeddings(vggish.quantize_embeddings(values))
    # Truncation fills [k, k + 1) * 4 / 255 - 2; dequantize returns k * 4 / 255 - 2 + 4 / 512.
    assert np.abs(roundtrip - values).max() <= 4 / 255 - 4 / 512 + 1e-6


def test_pca_whitening_subtracts_means_then_premultiplies(tmp_path):
    size = params.VGGISH_EMBEDDING_SIZE
    permutation = np.roll(np.arange(size), 1)  # output i reads input i - 1
    eigen_vectors = 0.5 * np.eye(size)[permutation]
    npz = tmp_path / "vggish_pca_params.npz"
    np.savez(npz, pca_eigen_vectors=eigen_vectors, pca_means=np.full((size, 1), 1.0))
    raw = np.arange(2 * size, dtype=np.float32).reshape(2, size)
    whitened = vggish.PcaParams.load(npz).whiten(raw)
    expected = 0.5 * (np.roll(raw, 1, axis=1) - 1.0)
    np.testing.assert_allclose(whitened, expected)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"pca_eigen_vectors": np.eye(128)}, "pca_means"),
        ({"pca_eigen_vectors": np.eye(64), "pca_means": np.zeros((128, 1))}, r"\(64, 64\)"),
    ],
)
def test_bad_pca_file_is_a_model_error(tmp_path, arrays, message):
    npz = tmp_path / "vggish_pca_params.npz"
    np.savez(npz, **arrays)
    with pytest.raises(ModelError, match=message):
        vggish.PcaParams.load(npz)


# --- the full-size network from a V1 checkpoint --------------------------------------------


@pytest.fixture(scope="session")
def official_folder(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], vggish.PcaParams]:
    """A model folder with a full-size V1 checkpoint (288 MB) and a PCA file, written once."""
    folder = tmp_path_factory.mktemp("vggish")
    weights = seeded_weights()
    write_tf1_checkpoint(folder / vggish.CHECKPOINT_FILE, weights, v1=True)
    rng = np.random.default_rng(11)
    size = params.VGGISH_EMBEDDING_SIZE
    # Scaled so that some whitened values fall outside [-2, 2] and get clipped.
    eigen_vectors = rng.standard_normal((size, size)) * 0.3
    means = rng.standard_normal((size, 1))
    np.savez(folder / vggish.PCA_PARAMS_FILE, pca_eigen_vectors=eigen_vectors, pca_means=means)
    return folder, weights, vggish.PcaParams(eigen_vectors, means)


@pytest.fixture(scope="session")
def embedder(official_folder) -> vggish.VGGishEmbedder:
    return vggish.load_embedder(official_folder[0])


def waveform_patches() -> np.ndarray:
    """A 440 Hz tone and white noise, one patch each."""
    rng = np.random.default_rng(3)
    seconds = np.arange(params.PATCH_SAMPLES) / params.SAMPLE_RATE
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * seconds)
    noise = 0.1 * rng.standard_normal(params.PATCH_SAMPLES)
    return np.stack([tone, noise]).astype(np.float32)


@pytest.mark.slow
def test_loader_maps_every_variable_numpy_forward_pass_agrees(official_folder, embedder):
    _, weights, _ = official_folder
    stored = vggish.checkpoint_variables(embedder.model)
    for name, value in weights.items():
        np.testing.assert_array_equal(stored[name].numpy(), value, err_msg=name)
    log_mels = vggish.log_mel_of_patches(waveform_patches())
    expected = numpy_vggish(log_mels, weights)
    got = embedder.network_embeddings(log_mels)
    assert (expected < 0).any(), "fc2 has no ReLU: some raw embeddings must be negative"
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_tf_function_path_equals_eager_keras_and_is_finite(embedder):
    rng = np.random.default_rng(5)
    # 70 patches: more than one batch, the last one partial.
    log_mels = rng.normal(-2.0, 2.0, (70, params.PATCH_FRAMES, params.MEL_BANDS)).astype(np.float32)
    fast = embedder.network_embeddings(log_mels)
    eager = embedder.model(log_mels[..., None], training=False).numpy()
    assert np.isfinite(fast).all()
    np.testing.assert_allclose(fast, eager, rtol=1e-5, atol=1e-5 * np.abs(eager).max())
    assert embedder._network.experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_embed_is_pca_clip_quantize_dequantize_of_the_network(official_folder, embedder):
    _, _, pca = official_folder
    patches = waveform_patches()
    raw = embedder.network_embeddings(vggish.log_mel_of_patches(patches))
    whitened = (pca.eigen_vectors @ (raw.T - pca.means)).T
    assert (np.abs(whitened) > 2).any(), "the PCA file should make clipping happen"
    expected_quantized = vggish.quantize_embeddings(whitened)

    quantized = embedder.embed_quantized(patches)
    embeddings = embedder.embed(patches)

    assert quantized.dtype == np.uint8 and quantized.shape == (2, 128)
    np.testing.assert_array_equal(quantized, expected_quantized)
    assert embeddings.dtype == np.float32 and embeddings.shape == (2, 128)
    np.testing.assert_array_equal(embeddings, vggish.dequantize_embeddings(quantized))
    assert embedder.name == "vggish" and embedder.embedding_size == 128


@pytest.mark.slow
def test_embed_handles_no_patches_and_rejects_wrong_shapes(embedder):
    assert embedder.embed(np.zeros((0, params.PATCH_SAMPLES), np.float32)).shape == (0, 128)
    with pytest.raises(ModelError, match="15600"):
        embedder.embed(np.zeros((2, 16000), np.float32))


@pytest.mark.slow
def test_models_package_loads_vggish_from_a_folder(official_folder):
    from shared.models import load_embedder

    folder, _, _ = official_folder
    for extra in ("class_labels_indices.csv", "ontology.json"):
        (folder / extra).touch()
    assert isinstance(load_embedder("vggish", folder), vggish.VGGishEmbedder)


def vggish_input_examples(waveform: np.ndarray) -> np.ndarray:
    """vggish_input.waveform_to_examples restated: one log-mel spectrogram of the whole clip,
    framed into 96-frame examples every 96 frames; a partial last example is dropped."""
    log_mel = frontend.log_mel_spectrogram(waveform, params.VGGISH_LOG_OFFSET)
    count = max(0, 1 + (len(log_mel) - 96) // 96)  # mel_features.frame's count
    return np.array([log_mel[96 * i : 96 * i + 96] for i in range(count)]).reshape(count, 96, 64)


@pytest.mark.parametrize(
    ("samples", "examples"),
    [(48000, 3), (15599, 0), (15600, 1), (30959, 1), (30960, 2), (160000, 10)],
)
def test_release_framing_is_vggish_input_framing(samples, examples):
    waveform = np.random.default_rng(samples).uniform(-0.5, 0.5, samples).astype(np.float32)
    patches = vggish.release_patches(waveform)
    assert patches.shape == (examples, params.PATCH_SAMPLES)
    expected = vggish_input_examples(waveform)
    assert len(expected) == examples
    if examples:
        np.testing.assert_allclose(vggish.log_mel_of_patches(patches), expected, atol=1e-5)
        starts = [np.flatnonzero(waveform == p[0])[0] for p in patches]
        assert np.diff(starts).tolist() == [15360] * (examples - 1)  # 0.96 s apart
