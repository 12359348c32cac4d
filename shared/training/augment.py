"""Waveform augmentation for training data: gain, time shift and mixed-in noise."""

from dataclasses import dataclass

import numpy as np

from shared import params


@dataclass(frozen=True)
class Augmentation:
    max_gain_db: float = 6.0  # gain drawn uniformly in [-max, +max] dB
    max_shift_seconds: float = params.DEFAULT_PATCH_HOP_SECONDS  # leading silence in [0, max]
    snr_db_range: tuple[float, float] = (10.0, 30.0)  # white noise at this signal-to-noise

    def __call__(self, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random variant of a float32 waveform in [-1, 1]."""
        gain = 10.0 ** (rng.uniform(-self.max_gain_db, self.max_gain_db) / 20.0)
        shift = int(rng.uniform(0.0, self.max_shift_seconds) * params.SAMPLE_RATE)
        shifted = np.concatenate([np.zeros(shift, np.float32), waveform * gain])
        power = float(np.mean(shifted**2)) or 1e-10
        snr = rng.uniform(*self.snr_db_range)
        noise = rng.normal(0.0, np.sqrt(power / 10.0 ** (snr / 10.0)), shifted.shape)
        return np.clip(shifted + noise, -1.0, 1.0).astype(np.float32)
