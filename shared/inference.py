"""Classifying a whole clip: patches -> per-patch scores -> clip score (mean over patches)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared import params
from shared.audio import frame_patches, load_audio, patch_start_times
from shared.models.base import AudioModel


@dataclass
class ClipResult:
    source: str
    model: str
    duration_s: float
    class_names: list[str]
    patch_times: np.ndarray  # [n] start of each patch, seconds
    patch_scores: np.ndarray  # [n, C]
    waveform: np.ndarray  # the 16 kHz mono audio that was classified

    @property
    def clip_scores(self) -> np.ndarray:
        return self.patch_scores.mean(axis=0)


def classify_waveform(
    model: AudioModel,
    waveform: np.ndarray,
    source: str = "",
    hop_seconds: float = params.DEFAULT_PATCH_HOP_SECONDS,
) -> ClipResult:
    patches = frame_patches(waveform, hop_seconds)
    return ClipResult(
        source=source,
        model=model.name,
        duration_s=len(waveform) / params.SAMPLE_RATE,
        class_names=model.class_names,
        patch_times=patch_start_times(len(patches), hop_seconds),
        patch_scores=model.score_patches(patches),
        waveform=waveform,
    )


def classify_file(
    model: AudioModel, path: Path, hop_seconds: float = params.DEFAULT_PATCH_HOP_SECONDS
) -> ClipResult:
    return classify_waveform(model, load_audio(path), str(path), hop_seconds)
