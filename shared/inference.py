"""Classifying a whole clip: patches -> per-patch scores -> clip score (mean over patches), and
the JSON row `soundhive classify --json` prints and `POST /classify` answers. A file streams
through the model a block at a time, so memory holds one block and the scores whatever its
length."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared import params
from shared.audio import PatchCutter, patch_start_times, stream_audio
from shared.models.base import AudioModel


@dataclass
class ClipResult:
    source: str
    model: str
    duration_s: float
    class_names: list[str]
    patch_times: np.ndarray  # [n] start of each patch, seconds
    patch_scores: np.ndarray  # [n, C]
    waveform: np.ndarray | None = None  # the 16 kHz mono audio classified, when kept

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


DECODE_BLOCK_SECONDS = 10.0  # decoded, cut and scored at a time: the audio memory holds


def classify_file(
    model: AudioModel,
    path: Path,
    hop_seconds: float = params.DEFAULT_PATCH_HOP_SECONDS,
    max_seconds: float | None = None,
    keep_waveform: bool = False,
) -> ClipResult:
    """Decode, cut and score a file block by block (patches as frame_patches cuts the whole
    waveform). Raises AudioError, AudioTooLong past `max_seconds` of audio."""
    cutter = PatchCutter(hop_seconds)
    scores, kept = [], []
    for block in stream_audio(path, DECODE_BLOCK_SECONDS, max_seconds):
        scores.append(_scores(model, cutter.push(block)))
        if keep_waveform:
            kept.append(block)
    scores.append(_scores(model, cutter.finish()))
    return ClipResult(
        source=str(path),
        model=model.name,
        duration_s=cutter.samples / params.SAMPLE_RATE,
        class_names=model.class_names,
        patch_times=patch_start_times(cutter.count, hop_seconds),
        patch_scores=np.concatenate(scores),
        waveform=np.concatenate(kept) if keep_waveform else None,
    )


def _scores(model: AudioModel, patches: np.ndarray) -> np.ndarray:
    if len(patches) == 0:
        return np.zeros((0, len(model.class_names)), np.float32)
    return model.score_patches(patches)
