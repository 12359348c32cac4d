"""Cutting a clip out of a ring of chunks: exact audio, the source's edges, late and missing
audio (services/recorder/ring.py)."""

import numpy as np
import pytest

from services.recorder import ring
from shared.messages import CHUNK_HOP_SAMPLES, CHUNK_SAMPLES, Event, PcmChunk

RATE = 16000


def chunks(audio: np.ndarray, session: str = "s1", first: int = 0, skip: frozenset = frozenset(),
           t0: float = 1000.0) -> list[PcmChunk]:
    """The chunks capture cuts from `audio` (the last zero-padded), but those in `skip`."""
    found = []
    for n in range(first, (len(audio) - 1) // CHUNK_HOP_SAMPLES + 1):
        start = n * CHUNK_HOP_SAMPLES
        part = audio[start:start + CHUNK_SAMPLES]
        last = start + CHUNK_SAMPLES >= len(audio)
        part = np.pad(part, (0, CHUNK_SAMPLES - len(part)))
        if n not in skip:
            found.append(PcmChunk.from_samples("mic", session, n, t0 + start / RATE,
                                               start / RATE, part, last))
        if last:
            break
    return found


def event(start: float, end: float, t0: float = 1000.0) -> Event:
    return Event(f"mic/Bark/{start}", "mic", "Bark", "end", 0.9, start, end, t0 + start,
                 t0 + end, "yamnet")


@pytest.fixture
def audio() -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.5, 0.5, 20 * RATE).astype(np.float32)


def test_the_cut_is_the_sources_audio_of_the_span(audio):
    cut = ring.cut(chunks(audio), event(5.0, 8.0), 3.0, 10.0)
    assert cut is not None and cut.start == 3.0
    assert np.allclose(cut.samples, audio[3 * RATE:10 * RATE], atol=1 / 32768)


def test_the_cut_stops_at_the_sources_edges(audio):
    cut = ring.cut(chunks(audio), event(0.5, 19.0), -1.5, 21.0)
    assert cut.start == 0.0 and len(cut.samples) >= len(audio)


def test_audio_not_in_yet_waits_and_missing_audio_is_a_gap(audio):
    assert ring.cut(chunks(audio[:9 * RATE + 100])[:-1], event(5.0, 8.0), 3.0, 10.0) is None
    with pytest.raises(ring.Gap, match="missing at"):
        ring.cut(chunks(audio, skip=frozenset({6})), event(5.0, 8.0), 3.0, 10.0)
    with pytest.raises(ring.Gap, match="no longer held"):
        ring.cut(chunks(audio, first=5), event(5.0, 8.0), 3.0, 10.0)


def test_the_events_session_is_the_one_cut(audio):
    earlier = chunks(audio, session="old", t0=500.0)
    cut = ring.cut(earlier + chunks(audio[::-1].copy()), event(5.0, 8.0), 3.0, 10.0)
    assert cut.session == "s1"
    assert np.allclose(cut.samples, audio[::-1][3 * RATE:10 * RATE], atol=1 / 32768)
