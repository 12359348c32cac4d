"""Classifying a whole clip: patches -> per-patch scores -> clip score (mean over patches), and
the JSON row `soundhive classify --json` prints and `POST /classify` answers."""

from collections.abc import Callable
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

    def json_row(self, rank: Callable[[np.ndarray], list[tuple[str, float]]],
                 timeline: bool = False) -> dict:
        """{file, duration_s, model, labels: [{label, score}], highest first} (+ timeline)."""

        def as_objects(scores: np.ndarray) -> list[dict]:
            return [{"label": name, "score": round(score, 4)} for name, score in rank(scores)]

        row: dict = {
            "file": self.source,
            "duration_s": round(self.duration_s, 3),
            "model": self.model,
            "labels": as_objects(self.clip_scores),
        }
        if timeline:
            row["timeline"] = [
                {"time_s": round(float(start), 3), "labels": as_objects(scores)}
                for start, scores in zip(self.patch_times, self.patch_scores, strict=True)
            ]
        return row


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
