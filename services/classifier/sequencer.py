"""Per-source order for the classifier's stateful stage (event tracker, window heads).

Replicas of the features and classifier services share consumer groups, so a source's chunks
reach the classifiers in any order and, after a crash, more than once. Each source therefore
has one small state in Redis (SourceState: session, `next_seq`, open events, recent embeddings)
that every replica reads and writes in one optimistic transaction (WATCH/MULTI) together with
the chunk's outputs. A chunk

  - with seq == next_seq is processed; so are the early chunks it unblocks, in order;
  - with seq > next_seq arrived early: it waits in the source's reorder hash (one entry per
    chunk, acknowledged upstream, so it survives any replica's death);
  - with seq < next_seq, or already waiting, is a duplicate and is dropped (counted);
  - of a session the source has left behind (capture restarted) is stale and is dropped;
    one of a new session ends the old session's open events and starts the count again.

A missing chunk (dead-lettered upstream, or lost with Redis) cannot hold a source forever: once
a source has waited `timeout_s` (or more than MAX_EARLY chunks wait), the missing sequence
numbers are skipped and counted as lost, and the source goes on.

Redis losing its data (FLUSHALL, a restart without persistence) erases every state, the streams
and the reorder hashes at once. Left alone, each source would start again at sequence 0, wait
the whole timeout for chunks it had long processed, count them all as lost and forget its open
events for good. Instead the classifier notices the loss (service.py: the epoch key it keeps in
Redis has vanished or changed) and each replica resumes, with `resume_after_loss`, the sources
whose state is gone from the last state it committed itself:

  - it goes on from its next sequence number; the chunks that waited in the erased reorder
    hash are forgotten (they fall in the gap skipped next);
  - every open event ends, with the time its sound was last heard (sinks get the end);
  - for RESYNC_S after the loss a gap is waited for only RESYNC_WAIT_S, not `timeout_s`: the
    streams the chunks travelled in are gone, so the only ones still to come are those a
    features worker held when the loss struck, written within its batch time (a batch slower
    than that, or features replicas reordering a source's new chunks meanwhile, makes a chunk
    skipped and counted rather than waited for).

Whatever the waits, `lost` counts exactly the chunks never processed: a skipped chunk that turns
up later is a duplicate (dropped). With several classifier replicas a source resumes from the
replica's own last state of it, which may be a few chunks behind another replica's: those are
then counted as lost though they were processed (a source whose state this replica never had
starts afresh, as a new source does).

Why this design rather than partitioning the stream by source (Kafka-style ownership)?
Partitions need ownership hand-over when replicas come and go (a protocol of its own), and do
not remove the reorder problem, since features replicas can still write a source's embeddings
out of order. A per-source high-water mark gives exactly-once processing in order with any
number of replicas and no coordination beyond Redis transactions, and the idempotency state
is per source (a few hundred bytes), not per chunk. Conflicts (two replicas advancing the same
source at once) are retried; they are rare in real time, where a source yields one chunk a
second.

`plan` is pure: it is the whole ordering policy, tested without Redis.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from services.classifier.events import TrackState
from shared import params
from shared.bus import PermanentError
from shared.messages import ENCODER, Embeddings

MAX_EARLY = 512  # chunks of one source waiting for a missing one (about 8 min of audio)
RESYNC_S = 30.0  # after a data loss, how long gaps are waited for only RESYNC_WAIT_S
RESYNC_WAIT_S = 1.0
KEPT_OLD_SESSIONS = 8
STATE_VERSION = 2  # 1: open events as [start, start_t, last_up, last_up_t, peak] lists


class SourceState(msgspec.Struct):
    """Kept in Redis as a msgpack map of these fields by name, beside `version`
    (STATE_VERSION; a state without one is of version 1)."""

    session: str
    next_seq: int = 0
    old_sessions: list[str] = []
    track: TrackState = msgspec.field(default_factory=TrackState)  # the event tracker's
    window: list[bytes] = []  # recent embeddings, oldest first
    early: list[int] = []  # seqs waiting in the reorder hash
    gap_since: float | None = None  # unix time the source started waiting for next_seq
    resync_until: float | None = None  # unix time the short waits after a loss end

    def dumps(self) -> bytes:
        return ENCODER.encode({"version": STATE_VERSION, **msgspec.structs.asdict(self)})

    @classmethod
    def loads(cls, raw: bytes | None) -> "SourceState | None":
        """The state, upgraded from any earlier version. A later version (written by a newer
        soundhive) or an unreadable state is a PermanentError saying so: retrying cannot help."""
        if raw is None:
            return None
        try:
            version = _VERSION.decode(raw).version
            if version == STATE_VERSION:
                return _DECODER.decode(raw)
            if version == 1:
                return msgspec.convert(_upgrade_v1(msgspec.msgpack.decode(raw)), cls)
        except msgspec.DecodeError as exc:  # ValidationError too
            raise PermanentError(f"source state unreadable: {exc}") from None
        raise PermanentError(f"source state version {version} is not one this classifier "
                             f"reads (1 to {STATE_VERSION}): upgrade the classifier")


class _Version(msgspec.Struct):
    version: int = 1


_VERSION = msgspec.msgpack.Decoder(_Version)
_DECODER = msgspec.msgpack.Decoder(SourceState)


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    open_events = data.pop("open_events")
    return {**data, "track": {"open": {label: _open_event_v1(label, fields)
                                       for label, fields in open_events.items()}}}


def _open_event_v1(label: str, fields: list[float]) -> dict[str, Any]:
    start, start_time, last_up, last_up_time, peak = fields
    return {"label": label, "trigger": label, "start": start, "start_time": start_time,
            "last_up": last_up, "end": last_up + params.PATCH_SECONDS,
            "end_time": last_up_time + params.PATCH_SECONDS, "peak": peak}


@dataclass
class Plan:
    """What one transaction does for one source."""

    state: SourceState | None
    ready: list[int] = field(default_factory=list)  # seqs to process now, in order
    arrived: dict[int, Embeddings] = field(default_factory=dict)  # this batch's usable chunks
    to_buffer: list[Embeddings] = field(default_factory=list)
    ended_tracks: list[TrackState] = field(default_factory=list)  # their open events end
    dropped_buffers: bool = False  # the reorder hash belongs to an ended session
    # Whether the source may be in the overdue-gap index (streams.REORDER_GAPS) now: its
    # committed state waited for a chunk, or is not known.
    gap_indexed: bool = True
    duplicates: int = 0
    stale: int = 0
    lost: int = 0
    reordered: int = 0

    @property
    def from_buffer(self) -> list[int]:
        return [seq for seq in self.ready if seq not in self.arrived]


def resume_after_loss(last: SourceState, now: float) -> Plan:
    """The plan that starts a source again from `last`, its last state this replica knew,
    after Redis lost it: its open events end, its early chunks (erased) are forgotten."""
    state = msgspec.structs.replace(last, track=TrackState(), early=[], gap_since=None,
                                    resync_until=now + RESYNC_S)
    return Plan(state, ended_tracks=[last.track])


def plan(state: SourceState | Plan | None, messages: Sequence[Embeddings], now: float,
         timeout_s: float) -> Plan:
    """Admit a source's newly arrived chunks (stream order) into its sequence, from its state
    (or from resume_after_loss's plan)."""
    result = state if isinstance(state, Plan) else Plan(
        state, gap_indexed=state is None or state.gap_since is not None)
    for message in _by_session_then_seq(messages):
        _admit(result, message)
    if result.state is not None:
        _advance(result, now, timeout_s)
    return result


def _by_session_then_seq(messages: Sequence[Embeddings]) -> list[Embeddings]:
    first_seen = {m.session: i for i, m in reversed(list(enumerate(messages)))}
    return sorted(messages, key=lambda m: (first_seen[m.session], m.seq))


def _admit(result: Plan, message: Embeddings) -> None:
    state = result.state
    if state is None:
        state = result.state = SourceState(message.session)
    elif message.session != state.session:
        if message.session in state.old_sessions:
            result.stale += 1
            return
        result.ended_tracks.append(state.track)
        result.dropped_buffers = result.dropped_buffers or bool(state.early)
        # The old session's chunks still waiting, or arrived in this batch, are not processed:
        # a new session means its capture restarted, so they would end nothing it still has.
        result.lost += len(state.early) + len(result.arrived)
        old = [*state.old_sessions, state.session][-KEPT_OLD_SESSIONS:]
        state = result.state = SourceState(message.session, old_sessions=old)
        result.arrived.clear()
        result.to_buffer.clear()
    if message.seq < state.next_seq or message.seq in state.early \
            or message.seq in result.arrived:
        result.duplicates += 1
        return
    result.arrived[message.seq] = message


def _advance(result: Plan, now: float, timeout_s: float) -> None:
    state = result.state
    assert state is not None
    waiting = set(state.early) | set(result.arrived)
    while True:
        while state.next_seq in waiting:
            waiting.discard(state.next_seq)
            result.ready.append(state.next_seq)
            state.next_seq += 1
        if not waiting:
            state.gap_since = None
            break
        if state.gap_since is None:
            # Back-dated after a loss, so that this check and the classifier's overdue scan
            # (by gap_since) both see the short wait.
            state.gap_since = now - timeout_s + _wait(state, now, timeout_s)
        if now - state.gap_since < timeout_s and len(waiting) <= MAX_EARLY:
            break
        resume = min(waiting)
        result.lost += resume - state.next_seq
        state.next_seq, state.gap_since = resume, now
    newly_early = [seq for seq in result.arrived if seq in waiting]
    result.reordered = len(newly_early)
    result.to_buffer = [result.arrived[seq] for seq in newly_early]
    state.early = sorted(waiting)


def _wait(state: SourceState, now: float, timeout_s: float) -> float:
    """How long a gap opening now is waited for."""
    if state.resync_until is not None and now < state.resync_until:
        return min(timeout_s, RESYNC_WAIT_S)
    return timeout_s
