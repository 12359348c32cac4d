"""VGGish in Keras, loaded from Google's TF1 checkpoint, with the AudioSet PCA postprocessor.

After tensorflow/models research/audioset/vggish (vggish_slim.py, vggish_postprocess.py):

    patches [n, PATCH_SAMPLES] -> log-mel [n, 96, 64] (offset 0.01) -> VGG network -> fc2 [n, 128]
    -> whitening PCA -> clip to [-2, 2] -> uint8 (the AudioSet release format)

The release (and vggish_input.waveform_to_examples) frames a clip into one example every 0.96 s
(96 log-mel frames, no overlap) and drops the incomplete tail: `release_patches` cuts waveforms
the same way, so that heads trained on the released features see the same time scale.

As in the official vggish_slim.py (fc2 with activation_fn=None), fc2, the `embedding` layer, has
no activation: the embedding is pre-activation.
"""

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared import frontend, params
from shared.errors import one_line
from shared.models.base import ModelError

# Quiet TensorFlow's C++ start-up notices; this must precede its import and leaves a value the
# user set alone.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import tensorflow as tf

CHECKPOINT_FILE = "vggish_model.ckpt"
PCA_PARAMS_FILE = "vggish_pca_params.npz"
PCA_EIGEN_VECTORS_KEY = "pca_eigen_vectors"
PCA_MEANS_KEY = "pca_means"

# Convolution blocks (layer names, filters); each block ends in a 2x2 max-pool of stride 2.
_CONV_BLOCKS = (
    (("conv1",), 64),
    (("conv2",), 128),
    (("conv3_1", "conv3_2"), 256),
    (("conv4_1", "conv4_2"), 512),
)
_FC1_LAYERS = ("fc1_1", "fc1_2")
_FC1_UNITS = 4096
_EMBEDDING_LAYER = "fc2"

# vggish_params.EXAMPLE_HOP_SECONDS: one AudioSet-release example per 96 frames of 10 ms.
RELEASE_HOP_SECONDS = params.RELEASE_PATCH_HOP_SECONDS


def release_patches(
    waveform: np.ndarray, hop_seconds: float = RELEASE_HOP_SECONDS
) -> np.ndarray:
    """[n, PATCH_SAMPLES] waveform patches every hop, only those wholly inside the waveform: the
    AudioSet release's framing, whose log-mel patches are vggish_input's examples (the 10 ms STFT
    frames of patch i are frames 96 i .. 96 i + 95 of the whole clip's). A clip shorter than one
    patch (0.975 s) gives none."""
    size = params.PATCH_SAMPLES
    hop = round(hop_seconds * params.SAMPLE_RATE)
    if hop <= 0:
        raise ValueError(f"the patch hop must be positive, got {hop_seconds} s")
    waveform = np.asarray(waveform, np.float32)
    if len(waveform) < size:
        return np.empty((0, size), np.float32)
    return np.lib.stride_tricks.sliding_window_view(waveform, size)[::hop]


def build_vggish() -> keras.Model:
    """The VGGish network on log-mel patches [batch, 96, 64, 1]; 72,141,184 parameters."""
    initializers = {
        "kernel_initializer": keras.initializers.TruncatedNormal(stddev=params.VGGISH_INIT_STDDEV),
        "bias_initializer": "zeros",
    }
    layers: list = [keras.Input((params.PATCH_FRAMES, params.MEL_BANDS, 1))]
    for block_number, (names, filters) in enumerate(_CONV_BLOCKS, start=1):
        for name in names:
            layers.append(
                keras.layers.Conv2D(
                    filters, 3, padding="same", activation="relu", name=name, **initializers
                )
            )
        layers.append(
            keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"pool{block_number}")
        )
    layers.append(keras.layers.Flatten(name="flatten"))
    for name in _FC1_LAYERS:
        layers.append(keras.layers.Dense(_FC1_UNITS, activation="relu", name=name, **initializers))
    # No ReLU on the embedding layer, unlike every other layer.
    layers.append(
        keras.layers.Dense(params.VGGISH_EMBEDDING_SIZE, name=_EMBEDDING_LAYER, **initializers)
    )
    return keras.Sequential(layers, name="vggish")


def checkpoint_scope(layer_name: str) -> str:
    """conv1 -> vggish/conv1; conv3_1 -> vggish/conv3/conv3_1 (slim.repeat nests a scope)."""
    block, _, repeat = layer_name.partition("_")
    return f"vggish/{block}/{layer_name}" if repeat else f"vggish/{block}"


def checkpoint_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """The model's variables keyed by their names in Google's checkpoint, in network order."""
    variables = {}
    for layer in model.layers:
        if layer.weights:
            scope = checkpoint_scope(layer.name)
            variables[f"{scope}/weights"] = layer.kernel
            variables[f"{scope}/biases"] = layer.bias
    return variables


def load_checkpoint(model: keras.Model, checkpoint_path: Path) -> None:
    """Set every variable of `model` from a TF1 checkpoint (V1 single file or V2 index/data)."""
    try:
        reader = tf.train.load_checkpoint(str(checkpoint_path))
    except (tf.errors.OpError, ValueError) as exc:
        raise ModelError(f"cannot read VGGish checkpoint {checkpoint_path}: {one_line(exc)}"
                         ) from None
    stored_shapes = reader.get_variable_to_shape_map()
    targets = checkpoint_variables(model)
    missing = [name for name in targets if name not in stored_shapes]
    if missing:
        raise ModelError(f"VGGish checkpoint {checkpoint_path} lacks {', '.join(missing)}")
    for name, variable in targets.items():
        if tuple(stored_shapes[name]) != tuple(variable.shape):
            raise ModelError(
                f"VGGish checkpoint {checkpoint_path}: {name} has shape "
                f"{tuple(stored_shapes[name])}, VGGish needs {tuple(variable.shape)}"
            )
    for name, variable in targets.items():
        variable.assign(reader.get_tensor(name).astype(np.float32, copy=False))


@dataclass(frozen=True)
class PcaParams:
    """The AudioSet release's whitening PCA: rows of `eigen_vectors` are the output dimensions."""

    eigen_vectors: np.ndarray  # [128, 128]
    means: np.ndarray  # [128, 1]

    @classmethod
    def load(cls, npz_path: Path) -> "PcaParams":
        size = params.VGGISH_EMBEDDING_SIZE
        try:
            with np.load(npz_path) as stored:
                eigen_vectors = stored[PCA_EIGEN_VECTORS_KEY]
                means = stored[PCA_MEANS_KEY].reshape(-1, 1)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelError(f"cannot read VGGish PCA parameters {npz_path}: {exc}") from None
        if eigen_vectors.shape != (size, size) or means.shape != (size, 1):
            raise ModelError(
                f"VGGish PCA parameters {npz_path} have shapes {eigen_vectors.shape} and "
                f"{means.shape}, expected ({size}, {size}) and ({size}, 1)"
            )
        return cls(eigen_vectors, means)

    def whiten(self, embeddings: np.ndarray) -> np.ndarray:
        """Raw fc2 embeddings [n, 128] -> PCA-whitened [n, 128] (as vggish_postprocess.py)."""
        return (self.eigen_vectors @ (embeddings.T - self.means)).T


def quantize_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """Whitened embeddings -> uint8, as vggish_postprocess.py: clip, scale to [0, 255], truncate."""
    low, high = params.QUANTIZE_MIN_VALUE, params.QUANTIZE_MAX_VALUE
    clipped = np.clip(embeddings, low, high)
    return ((clipped - low) * ((params.QUANTIZE_LEVELS - 1) / (high - low))).astype(np.uint8)


def dequantize_embeddings(quantized: np.ndarray) -> np.ndarray:
    """uint8 -> float32, as YouTube-8M's Dequantize that AudioSet heads were trained with.

    Its offset of half a 256th of the range puts each value near the middle of the bin that
    truncation filled, so the outputs span [-1.9922, 2.0078] rather than exactly [-2, 2].
    """
    low, high = params.QUANTIZE_MIN_VALUE, params.QUANTIZE_MAX_VALUE
    step = np.float32((high - low) / (params.QUANTIZE_LEVELS - 1))
    offset = np.float32((high - low) / (2 * params.QUANTIZE_LEVELS) + low)
    return quantized.astype(np.float32) * step + offset


def log_mel_of_patches(patches: np.ndarray) -> np.ndarray:
    """float32 waveform patches [n, PATCH_SAMPLES] -> VGGish log-mel patches [n, 96, 64]."""
    patches = np.asarray(patches, np.float32)
    if patches.ndim != 2 or patches.shape[1] != params.PATCH_SAMPLES:
        raise ModelError(
            f"VGGish needs waveform patches [n, {params.PATCH_SAMPLES}], got {patches.shape}"
        )
    log_mels = np.empty((len(patches), params.PATCH_FRAMES, params.MEL_BANDS), np.float32)
    for index, patch in enumerate(patches):
        log_mels[index] = frontend.log_mel_spectrogram(patch, params.VGGISH_LOG_OFFSET)
    return log_mels


class VGGishEmbedder:
    """The Embedder: waveform patches -> AudioSet-release VGGish embeddings."""

    name = "vggish"
    embedding_size = params.VGGISH_EMBEDDING_SIZE
    patch_hop_seconds = RELEASE_HOP_SECONDS  # served as the AudioSet release was framed

    def __init__(
        self, model: keras.Model, pca: PcaParams, batch_size: int = params.VGGISH_BATCH_SIZE
    ):
        self.model = model
        self.pca = pca
        self.batch_size = batch_size
        # A fixed signature traces the graph once; model.predict would rebuild its machinery
        # on every call.
        self._network = tf.function(
            self._run_network,
            input_signature=[
                tf.TensorSpec([None, params.PATCH_FRAMES, params.MEL_BANDS], tf.float32)
            ],
        )

    def _run_network(self, log_mels: tf.Tensor) -> tf.Tensor:
        return self.model(tf.expand_dims(log_mels, -1), training=False)

    def network_embeddings(self, log_mels: np.ndarray) -> np.ndarray:
        """Log-mel patches [n, 96, 64] -> raw fc2 embeddings [n, 128], before the PCA."""
        log_mels = np.asarray(log_mels, np.float32)
        embeddings = np.empty((len(log_mels), self.embedding_size), np.float32)
        for start in range(0, len(log_mels), self.batch_size):
            batch = log_mels[start : start + self.batch_size]
            embeddings[start : start + len(batch)] = self._network(batch).numpy()
        return embeddings

    def embed_quantized(self, patches: np.ndarray) -> np.ndarray:
        """Waveform patches [n, PATCH_SAMPLES] -> uint8 [n, 128], the AudioSet release format."""
        raw = self.network_embeddings(log_mel_of_patches(patches))
        return quantize_embeddings(self.pca.whiten(raw))

    def embed(self, patches: np.ndarray) -> np.ndarray:
        """Waveform patches [n, PATCH_SAMPLES] -> dequantised float32 [n, 128] (what heads see)."""
        return dequantize_embeddings(self.embed_quantized(patches))


def load_embedder(folder: Path) -> VGGishEmbedder:
    """VGGish from `folder`/vggish_model.ckpt and `folder`/vggish_pca_params.npz."""
    pca = PcaParams.load(folder / PCA_PARAMS_FILE)
    model = build_vggish()
    load_checkpoint(model, folder / CHECKPOINT_FILE)
    return VGGishEmbedder(model, pca)
