"""A clip's spectrogram as a PNG: log-mel (the models' own front end) over a labelled time axis,
the event's start and end marked."""

from pathlib import Path

import numpy as np

from shared import params
from shared.frontend import log_mel_spectrogram

WIDTH_IN, HEIGHT_IN, DPI = 6.0, 2.2, 100


def render(samples: np.ndarray, target: Path, title: str, marks: tuple[float, float]) -> None:
    """Write the spectrogram of `samples` (16 kHz) to `target` (PNG); `marks`: the event's start
    and end, seconds into the clip."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in any thread

    spectrogram = log_mel_spectrogram(samples, params.YAMNET_LOG_OFFSET)
    seconds = len(spectrogram) * params.STFT_HOP_SECONDS
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    axes = figure.add_subplot()
    axes.imshow(spectrogram.T, origin="lower", aspect="auto", cmap="magma",
                extent=(0, seconds, 0, params.MEL_BANDS))
    for mark in marks:
        axes.axvline(mark, color="white", linestyle="--", linewidth=0.8)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("mel band")
    axes.set_title(title, fontsize="small")
    figure.tight_layout()
    figure.savefig(target, format="png")
