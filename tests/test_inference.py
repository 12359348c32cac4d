"""Classifying a file as it streams through the model gives the whole-file results."""

from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from shared import params
from shared.audio import find_audio_files, frame_patches, load_audio
from shared.inference import classify_file
from shared.models import load_model


@pytest.fixture(scope="module")
def yamnet(models_dir):
    return load_model("yamnet")


def assert_whole_file_results(model, path: Path, hop_seconds: float) -> None:
    """classify_file against the whole-file path it replaced: the waveform decoded at once,
    cut by frame_patches and scored in one batch."""
    waveform = load_audio(path)
    expected = model.score_patches(frame_patches(waveform, hop_seconds))
    result = classify_file(model, path, hop_seconds, keep_waveform=True)
    assert result.duration_s == len(waveform) / params.SAMPLE_RATE
    assert result.patch_scores.shape == expected.shape
    np.testing.assert_allclose(result.patch_scores, expected, atol=1e-5)
    np.testing.assert_allclose(result.clip_scores, expected.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(result.waveform, waveform, atol=1e-6)


def test_each_clip_scores_as_the_whole_file_did(yamnet, clips_dir):
    for clip in find_audio_files(clips_dir):
        assert_whole_file_results(yamnet, clip, params.DEFAULT_PATCH_HOP_SECONDS)


def test_a_long_file_over_many_blocks_scores_as_the_whole_file_did(yamnet, clips_dir,
                                                                   tmp_path):
    clips = np.concatenate([load_audio(clip) for clip in find_audio_files(clips_dir)] * 2)
    path = tmp_path / "clips-48k.flac"  # two minutes at 48 kHz: resampled over 13 blocks
    soundfile.write(path, np.clip(soxr.resample(clips, params.SAMPLE_RATE, 48000), -1, 1),
                    48000, subtype="PCM_24")
    for hop_seconds in (params.DEFAULT_PATCH_HOP_SECONDS, 1.5):
        assert_whole_file_results(yamnet, path, hop_seconds)
