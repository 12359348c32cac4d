"""The VGGish/YAMNet log-mel front end in numpy (after vggish's mel_features.py).

16 kHz mono -> |STFT| (25 ms periodic Hann, 10 ms hop, FFT 512) -> 64 HTK mel bands
(125-7500 Hz) -> log(mel + offset) -> 96-frame patches.
"""

from functools import cache

import numpy as np

from shared import params

_MEL_BREAK_HZ = 700.0
_MEL_HIGH_Q = 1127.0


def hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return _MEL_HIGH_Q * np.log1p(np.asarray(hertz, np.float64) / _MEL_BREAK_HZ)


@cache
def periodic_hann(window_length: int = params.STFT_WINDOW_SAMPLES) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi / window_length * np.arange(window_length))).astype(
        np.float32
    )


@cache
def mel_matrix(
    num_mel_bins: int = params.MEL_BANDS,
    num_spectrogram_bins: int = params.FFT_LENGTH // 2 + 1,
    sample_rate: int = params.SAMPLE_RATE,
    lower_hz: float = params.MEL_MIN_HZ,
    upper_hz: float = params.MEL_MAX_HZ,
) -> np.ndarray:
    """[spectrogram bins, mel bins] triangular weights, spaced evenly in mel, DC bin zeroed."""
    spectrogram_mels = hertz_to_mel(np.linspace(0.0, sample_rate / 2, num_spectrogram_bins))
    edges = np.linspace(hertz_to_mel(lower_hz), hertz_to_mel(upper_hz), num_mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (spectrogram_mels[:, None] - lower) / (center - lower)
    falling = (upper - spectrogram_mels[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights.astype(np.float32)


# Frames transformed at a time: a block's float64 temporaries (~1 MB) stay in cache, where a
# whole batch's or a long file's page-faulted as much as they computed.
BLOCK_FRAMES = 256


def stft_magnitude(samples: np.ndarray, window: np.ndarray | None = None) -> np.ndarray:
    """[..., frames, FFT_LENGTH // 2 + 1] magnitudes of the windowed frames along the last axis
    (no padding) of float32 samples in [-1, 1], or of int16 PCM read as those floats
    (params.PCM_FULL_SCALE). Computed as YAMNet's TFLite graph computes them (window product in
    float32, FFT in float64 rounded to complex64, then hypotf): the same magnitudes but for a
    rare float32 step in a near-zero bin (two float64 FFTs round differently), so the graph's
    network gives the same embeddings from them (shared/models/yamnet.py). numpy's float64 FFT
    is also 3x faster than its float32 one here. `window`: periodic Hann by default."""
    window = periodic_hann() if window is None else window
    bins = params.FFT_LENGTH // 2 + 1
    if samples.shape[-1] < len(window):
        return np.empty((*samples.shape[:-1], 0, bins), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(samples, len(window), axis=-1)[
        ..., :: params.STFT_HOP_SAMPLES, :]
    if samples.dtype == np.int16:
        # s * (w / 32768) rounds as (s / 32768) * w does: the scale is a power of two.
        window = window / np.float32(params.PCM_FULL_SCALE)
    magnitudes = np.empty((*frames.shape[:-1], bins), np.float32)
    for start in range(0, frames.shape[-2], BLOCK_FRAMES):
        block = slice(start, start + BLOCK_FRAMES)
        magnitudes[..., block, :] = _magnitudes(frames[..., block, :], window)
    return magnitudes


def _magnitudes(frames: np.ndarray, window: np.ndarray) -> np.ndarray:
    # The window product in float32 (float samples rounded to float32 first), stored widened
    # into the FFT's zero padding: given 400 samples and n=512, numpy's rfft pads each row into
    # a buffer of its own, which costs half as much again as the FFT of padded rows.
    padded = np.zeros((*frames.shape[:-1], params.FFT_LENGTH))
    np.multiply(frames, window, out=padded[..., :frames.shape[-1]], dtype=np.float32)
    spectrum = np.fft.rfft(padded).astype(np.complex64)
    # hypotf of the complex64 parts, as the graph's: the parts' squares are exact in float64,
    # rounded once as glibc's hypotf rounds them (np.abs rounds differently, and np.hypot is
    # ten times slower).
    parts = spectrum.view(np.float32).astype(np.float64)
    parts *= parts
    return np.sqrt(parts[..., 0::2] + parts[..., 1::2])


def log_mel_spectrogram(waveform: np.ndarray, log_offset: float) -> np.ndarray:
    """[frames, MEL_BANDS] log-mel spectrogram of a 16 kHz waveform."""
    return np.log(stft_magnitude(waveform) @ mel_matrix() + np.float32(log_offset))


def log_mel_patches(waveform: np.ndarray, log_offset: float, hop_frames: int) -> np.ndarray:
    """[n, PATCH_FRAMES, MEL_BANDS] patches every hop_frames, computing the spectrogram once."""
    spectrogram = log_mel_spectrogram(waveform, log_offset)
    if len(spectrogram) < params.PATCH_FRAMES:
        return np.empty((0, params.PATCH_FRAMES, params.MEL_BANDS), np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(spectrogram, params.PATCH_FRAMES, axis=0)[
        ::hop_frames
    ]
    return np.ascontiguousarray(windows.transpose(0, 2, 1))
