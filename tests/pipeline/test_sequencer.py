"""The classifier's ordering policy (services/classifier/sequencer.py), without Redis."""

import msgpack
import numpy as np
import pytest

from services.classifier.events import OpenEvent, TrackState
from services.classifier.sequencer import (
    MAX_EARLY,
    RESYNC_S,
    RESYNC_WAIT_S,
    SourceState,
    plan,
    resume_after_loss,
)
from shared.bus import PermanentError
from shared.messages import ENVELOPE_FRAMES, Embeddings

TIMEOUT_S = 10.0


def chunk(seq: int, session: str = "a") -> Embeddings:
    return Embeddings("src", session, seq, 0.0, seq * 0.96, 0.1, False, "yamnet", 2,
                      np.zeros(4, "<f4").tobytes(), bytes(ENVELOPE_FRAMES))


def step(state, seqs: list[int], now: float = 0.0, session: str = "a"):
    result = plan(state, [chunk(seq, session) for seq in seqs], now, TIMEOUT_S)
    return result.state, result


def test_in_order_chunks_are_ready_in_order():
    state, result = step(None, [0, 1, 2])
    assert result.ready == [0, 1, 2] and state.next_seq == 3 and not result.to_buffer


def test_an_early_chunk_waits_until_its_predecessor_arrives():
    state, result = step(None, [1, 2])  # seq 0 went to another replica
    assert result.ready == [] and [m.seq for m in result.to_buffer] == [1, 2]
    assert state.early == [1, 2] and state.gap_since == 0.0
    state, result = step(state, [0], now=1.0)
    assert result.ready == [0, 1, 2] and result.from_buffer == [1, 2]
    assert state.next_seq == 3 and state.early == [] and state.gap_since is None


def test_only_a_source_that_waited_or_is_unknown_may_be_in_the_overdue_index():
    assert step(None, [0])[1].gap_indexed  # no state: an old entry may be there
    waiting, _ = step(None, [1, 2])
    in_order, _ = step(None, [0])
    assert step(waiting, [0])[1].gap_indexed  # its gap closes: its entry must go
    assert not step(in_order, [1])[1].gap_indexed  # nothing to remove
    assert resume_after_loss(in_order, 0.0).gap_indexed


def test_duplicates_are_dropped_wherever_they_come_from():
    state, _ = step(None, [0, 1, 3])
    state, result = step(state, [1, 3, 0])  # redeliveries: done, done, waiting
    assert result.duplicates == 3 and result.ready == [] and not result.to_buffer
    _, result = step(state, [2, 2])
    assert result.ready == [2, 3] and result.duplicates == 1


def test_a_missing_chunk_is_skipped_after_the_timeout_and_counted():
    state, _ = step(None, [0, 1, 4, 5])
    state, result = step(state, [], now=TIMEOUT_S - 1)
    assert result.ready == [] and result.lost == 0
    state, result = step(state, [], now=TIMEOUT_S)
    assert result.ready == [4, 5] and result.lost == 2 and state.next_seq == 6
    _, result = step(state, [2])  # it turns up after all: too late, dropped
    assert result.duplicates == 1 and result.ready == []


def test_too_many_waiting_chunks_skip_the_gap_at_once():
    _, result = step(None, list(range(1, MAX_EARLY + 2)))
    assert result.lost == 1 and result.ready == list(range(1, MAX_EARLY + 2))


def test_a_new_session_restarts_the_count_and_old_sessions_are_stale():
    state, _ = step(None, [0, 1, 3])
    state.track = TrackState({"Dog": OpenEvent("Dog", "Dog", 0.0, 0.0, 0.5, 1.5, 1.5, 0.9)})
    ended = state.track
    state, result = step(state, [0], session="b")
    assert result.ended_tracks == [ended]
    assert result.dropped_buffers and result.lost == 1  # seq 3 of session a never completed
    assert state.session == "b" and state.old_sessions == ["a"] and result.ready == [0]
    assert state.track == TrackState()
    _, result = step(state, [2], session="a")
    assert result.stale == 1 and result.ready == []


def test_after_a_data_loss_a_source_resumes_where_it_was_and_ends_its_events():
    state, _ = step(None, [0, 1, 2, 5, 6])  # 3 and 4 missing, 5 and 6 in the reorder hash
    state.track = TrackState({"Dog": OpenEvent("Dog", "Dog", 0.0, 0.0, 0.5, 1.5, 1.5, 0.9)})
    last = state
    resumed = resume_after_loss(last, now=100.0)
    assert resumed.ended_tracks == [last.track]
    state, result = step(resumed, [9, 10], now=100.0)  # 3 to 8 were in erased keys
    assert result.ready == [] and result.lost == 0 and state.track == TrackState()
    state, result = step(state, [], now=100.0 + RESYNC_WAIT_S)  # not the reorder timeout
    assert result.ready == [9, 10] and result.lost == 6 and state.next_seq == 11
    assert last.next_seq == 3 and last.early == [5, 6]  # the replica's copy is left as it was


def test_the_short_wait_after_a_loss_ends():
    state, _ = step(resume_after_loss(SourceState("a", next_seq=3), now=0.0), [3])
    state, result = step(state, [5], now=RESYNC_S)
    state, result = step(state, [], now=RESYNC_S + RESYNC_WAIT_S)
    assert result.lost == 0 and state.next_seq == 4  # a later gap gets the whole timeout


def test_state_round_trips_through_msgpack():
    state, _ = step(None, [0, 2])
    state.window = [np.ones(2, "<f4").tobytes()]
    state.track.floor_db = np.float64(-60.0)  # as the tracker computes it
    again = SourceState.loads(state.dumps())
    assert again == state and len(state.dumps()) < 200


@pytest.mark.parametrize(("raw", "reason"), [
    (msgpack.packb({"version": 3, "session": "a"}), "source state version 3 is not one this"),
    (msgpack.packb({"version": 2, "session": "a", "next_seq": "7"}),
     "source state unreadable: Expected `int`, got `str` - at `$.next_seq`"),
    (b"\xc1", "source state unreadable: MessagePack data is malformed"),
])
def test_a_state_this_classifier_cannot_read_is_a_permanent_error(raw: bytes, reason: str):
    with pytest.raises(PermanentError, match=reason.replace("$", r"\$")):
        SourceState.loads(raw)
