"""The `classify --plot` picture: what the model heard, and what it made of it over time."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to files only
import matplotlib.pyplot as plt
import numpy as np

from shared import params
from shared.frontend import log_mel_spectrogram
from shared.inference import ClipResult


def plot_clip(result: ClipResult, target: Path, top: int) -> None:
    spectrogram = log_mel_spectrogram(result.waveform, params.YAMNET_LOG_OFFSET)
    best = np.argsort(-result.clip_scores)[:top]
    centres = result.patch_times + params.PATCH_SECONDS / 2
    end = max(result.duration_s, params.PATCH_SECONDS)

    figure, (above, below) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    above.imshow(
        spectrogram.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0, len(spectrogram) * params.STFT_HOP_SECONDS, 0, params.MEL_BANDS),
    )
    above.set_ylabel("mel band")
    above.set_title(f"{Path(result.source).name} ({result.model})")
    for index in best:
        below.plot(
            centres,
            result.patch_scores[:, index],
            marker=".",
            label=f"{result.class_names[index]} ({result.clip_scores[index]:.2f})",
        )
    below.set_ylim(0, 1)
    below.set_xlim(0, end)
    below.set_xlabel("time (s)")
    below.set_ylabel("score")
    below.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
