"""Cutting an event's clip out of its source's ring of recent chunks (streams.ring_key).

Chunk n of a session covers [offset, offset + CHUNK_SECONDS) and the next one starts
CHUNK_HOP_SECONDS later (shared/messages.py), so a run of consecutive chunks is the source's
audio without gap or repeat when each gives its first CHUNK_HOP_SAMPLES and the last gives all.
Capture numbers chunks as it writes them, so audio it dropped shows as a jump in `offset`, not
in `seq`.
"""

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from shared import params
from shared.messages import CHUNK_HOP_SAMPLES, CHUNK_HOP_SECONDS, CHUNK_SAMPLES, Event, PcmChunk

CHUNK_SECONDS = CHUNK_SAMPLES / params.SAMPLE_RATE
_SLACK_S = 1e-3  # float rounding of offsets


class Gap(Exception):
    """The ring does not hold all of the clip's audio, and never will (one-line reason)."""


@dataclass(frozen=True)
class Cut:
    samples: np.ndarray  # float32 16 kHz mono
    start: float  # seconds from the start of the source
    session: str
    seqs: tuple[int, ...]  # the chunks it came from


def cut(ring: list[PcmChunk], event: Event, lo: float, hi: float) -> Cut | None:
    """The audio of [lo, hi) (seconds from the source's start; clamped to where the source
    starts and, if it has ended, ends) of the event's session; None while the ring does not
    reach `hi` yet; Gap when part of it is missing for good."""
    chunks = _session(ring, event)
    if not chunks:
        raise Gap("none of the source's audio is held (dropped, or the recorder was away)")
    lo = max(lo, 0.0)
    last = chunks[-1]
    if last.offset + CHUNK_SECONDS < hi - _SLACK_S:
        if not last.last:
            return None
        hi = last.offset + CHUNK_SECONDS
    if chunks[0].offset > lo + _SLACK_S:
        raise Gap(f"the audio before {chunks[0].offset:.1f} s of the source was no longer "
                  "held (older than the ring, or trimmed before the recorder read it)")
    used = [c for c in chunks if c.offset + CHUNK_HOP_SECONDS > lo and c.offset < hi]
    for a, b in pairwise(used):
        missing = b.offset - a.offset - CHUNK_HOP_SECONDS
        if abs(missing) > _SLACK_S:
            raise Gap(f"{missing:.2f} s of audio missing at {a.offset + CHUNK_HOP_SECONDS:.1f} s "
                      "of the source (dropped upstream)")
    if used[-1].offset + CHUNK_SECONDS < hi - _SLACK_S:  # the next chunk is not in yet
        return None
    samples = np.concatenate([c.samples()[:CHUNK_HOP_SAMPLES] for c in used[:-1]]
                             + [used[-1].samples()])
    first = round((lo - used[0].offset) * params.SAMPLE_RATE)
    end = round((hi - used[0].offset) * params.SAMPLE_RATE)
    return Cut(samples[first:end], lo, used[0].session, tuple(c.seq for c in used))


def _session(ring: list[PcmChunk], event: Event) -> list[PcmChunk]:
    """The chunks of the capture session the event was heard in, one per seq, in order: the
    session whose chunks map source time to capture time as the event does."""
    if not ring:
        return []
    origin = event.start_time - event.start
    session = min(ring, key=lambda c: abs(c.t - c.offset - origin)).session
    unique = {c.seq: c for c in ring if c.session == session}
    return sorted(unique.values(), key=lambda c: c.offset)
