"""Event rules: one event per sound (hierarchy), smoothing, thresholds and hysteresis, the
relative gate, onset placement, allow/deny by category, rules files, and state written by older
versions."""

from pathlib import Path

import msgpack
import msgspec
import numpy as np
import pytest

from services.classifier.events import (
    FLOOR_PERCENTILE,
    EventTracker,
    Rules,
    RulesError,
    TrackState,
    quiet_level,
)
from services.classifier.sequencer import SourceState
from shared.hierarchy import LabelTree
from shared.labels import Ontology
from shared.messages import ENVELOPE_FRAMES, Embeddings, Event

NAMES = ["Animal", "Domestic animals, pets", "Dog", "Bark", "Cat", "Speech", "Music", "Guitar",
         "Silence", "Pink noise"]
LOUD, QUIET = -20, -50  # dBFS
PULSES = ([LOUD] * 8 + [QUIET] * 8) * 3  # a chunk of sound with pauses: the gate stays open


@pytest.fixture(scope="module")
def tree(models_dir: Path) -> LabelTree:
    return LabelTree(NAMES, Ontology.from_json(models_dir / "ontology.json"))


def scores(**by_name: float) -> list[float]:
    return [by_name.get(name.split(",")[0].replace(" ", "_"), 0.0) for name in NAMES]


def chunk(seq: int, levels_db: float | list[float] = LOUD, last: bool = False) -> Embeddings:
    levels = np.broadcast_to(np.asarray(levels_db, np.int8), (ENVELOPE_FRAMES,))
    return Embeddings("src", "s", seq, 1000 + seq * 0.96, seq * 0.96, 0.1, last, "yamnet", 1,
                      np.zeros((2, 1), "<f4").tobytes(), levels.astype(np.int8).tobytes())


def feed(tracker: EventTracker, rows: list[list[float]], levels_db=LOUD,
         state: TrackState | None = None, first_seq: int = 0, last: bool = False
         ) -> tuple[TrackState, list[Event]]:
    """Rows of scores, two patches per chunk."""
    state, events = state or TrackState(), []
    for n in range(0, len(rows), 2):
        seq = first_seq + n // 2
        state, new = tracker.update(state, chunk(seq, levels_db, last and n + 2 >= len(rows)),
                                    np.array(rows[n:n + 2], np.float32))
        events += new
    return state, events


def test_a_bark_is_one_bark_event_with_its_ancestors_as_categories(tree):
    tracker = EventTracker(Rules.shipped(), tree, "yamnet")
    bark = scores(Animal=0.95, Domestic_animals=0.9, Dog=0.85, Bark=0.6)
    dog_only = scores(Animal=0.9, Domestic_animals=0.8, Dog=0.7, Bark=0.05)
    _, events = feed(tracker, [bark, dog_only, bark] + [scores()] * 7)
    assert [(e.label, e.kind) for e in events] == [("Bark", "start"), ("Bark", "end")]
    assert events[0].categories == ["Dog", "Domestic animals, pets", "Animal"]
    assert events[0].score == pytest.approx(0.6)


def test_a_branch_confident_only_at_its_parent_names_the_parent(tree):
    tracker = EventTracker(Rules.shipped(), tree)
    _, events = feed(tracker, [scores(Music=0.8, Guitar=0.2)] * 2, last=True)
    assert [(e.label, e.kind, e.categories) for e in events] == [
        ("Music", "start", []), ("Music", "end", [])]


def test_two_unrelated_confident_kinds_keep_the_label_both_are_kinds_of(tree):
    everything = np.ones(len(NAMES), bool)
    cat_or_dog = np.array(scores(Animal=0.9, Domestic_animals=0.85, Dog=0.7, Cat=0.6))
    assert NAMES[tree.most_specific(cat_or_dog, 0, everything)] == "Domestic animals, pets"
    dog = np.array(scores(Animal=0.9, Domestic_animals=0.85, Dog=0.7, Bark=0.6, Cat=0.05))
    assert NAMES[tree.most_specific(dog, 0, everything)] == "Bark"


def test_hierarchy_all_makes_one_event_per_label(tree):
    tracker = EventTracker(Rules.shipped(hierarchy="all", confirm_patches=1), tree)
    _, events = feed(tracker, [scores(Animal=0.9, Dog=0.8, Bark=0.7)] * 2)
    assert sorted(e.label for e in events) == ["Animal", "Bark", "Dog"]


def test_unrelated_sounds_make_their_own_events_when_each_dominates(tree):
    tracker = EventTracker(Rules.shipped(dominance=0.8, confirm_patches=1), tree)
    _, events = feed(tracker, [scores(Dog=0.8, Speech=0.7)] * 2)
    assert sorted(e.label for e in events) == ["Dog", "Speech"]
    # the shipped rules: a lesser guess beside the patch's main sound starts nothing ...
    state, events = feed(EventTracker(Rules.shipped(), tree), [scores(Dog=0.8, Cat=0.7)] * 2)
    assert [e.label for e in events] == ["Dog"]
    # ... until it is the main sound
    _, events = feed(EventTracker(Rules.shipped(), tree), [scores(Dog=0.5, Cat=0.9)] * 2,
                     levels_db=-10, state=state, first_seq=1)
    assert [e.label for e in events] == ["Cat"]


def test_a_vaguer_event_is_renamed_when_its_sound_becomes_clear(tree):
    tracker = EventTracker(Rules.shipped(), tree)
    _, events = feed(tracker, [scores(Animal=0.9, Dog=0.3), scores(Animal=0.9, Dog=0.7)])
    assert [(e.label, e.kind, e.start) for e in events] == [
        ("Animal", "start", 0.0), ("Animal", "end", 0.0), ("Dog", "start", 0.0)]
    # also seconds later: the model named the sound vaguely until then
    vague = [scores(Animal=0.9, Dog=0.2)] * 6
    _, events = feed(tracker, vague + [scores(Animal=0.9, Dog=0.8)] * 2)
    assert [(e.label, e.kind, e.start) for e in events] == [
        ("Animal", "start", 0.0), ("Animal", "end", 0.0), ("Dog", "start", 0.0)]


def test_a_rename_needs_the_descendant_to_dominate_as_a_start_does(tree):
    # the tracker checks dominance last (after the open events): for renames too (the gate,
    # closed over a steady level, keeps Music from starting; it does not gate a rename)
    tracker = EventTracker(Rules.shipped(), tree)
    _, events = feed(tracker, [scores(Animal=0.9)] * 2
                     + [scores(Animal=0.9, Dog=0.7, Music=0.95)] * 2)
    assert [(e.label, e.kind) for e in events] == [("Animal", "start")]
    _, events = feed(tracker, [scores(Animal=0.9)] * 2 + [scores(Animal=0.9, Dog=0.7)] * 2)
    assert [(e.label, e.kind) for e in events] == [
        ("Animal", "start"), ("Animal", "end"), ("Dog", "start")]


def test_smoothing_halves_a_label_said_for_one_patch(tree):
    tracker = EventTracker(Rules.shipped(smooth_patches=2, confirm_patches=1), tree)
    assert feed(tracker, [scores(), scores(Dog=0.9), scores(), scores()], PULSES)[1] == []
    # two patches in a row count whole, across a chunk boundary too (the state carries it)
    _, events = feed(tracker, [scores(), scores(Dog=0.625), scores(Dog=0.4375), scores()],
                     PULSES)
    assert [(e.label, e.kind, e.score) for e in events] == [("Dog", "start", 0.625)]


def test_a_replica_reading_the_state_back_emits_the_same_events(tree):
    tracker = EventTracker(Rules.shipped(), tree)
    rows = [scores(), scores(Dog=0.7), scores(Dog=0.4, Cat=0.3), scores(Cat=0.8), scores(),
            scores(Speech=0.6), scores(Speech=0.5)] + [scores()] * 7
    _, straight = feed(tracker, rows, PULSES)
    state, through_redis = SourceState("s"), []
    for n in range(0, len(rows), 2):
        state = SourceState.loads(state.dumps())
        state.track, new = tracker.update(state.track, chunk(n // 2, PULSES),
                                          np.array(rows[n:n + 2], np.float32))
        through_redis += new
    assert through_redis == straight and len(straight) >= 4


def test_a_lone_confident_patch_starts_nothing_unless_it_is_sure(tree):
    tracker = EventTracker(Rules.shipped(confirm_patches=2, sure_score=0.8, smooth_patches=1),
                           tree)
    quiet, loud, louder = QUIET, -30, -20
    state, events = feed(tracker, [scores(), scores()], levels_db=quiet)
    state, events = feed(tracker, [scores(Dog=0.7), scores()], loud, state, first_seq=1)
    assert events == []  # one patch at 0.7: not yet
    state, events = feed(tracker, [scores(Dog=0.7), scores(Bark=0.7)], louder, state, first_seq=2)
    assert [e.label for e in events] == ["Bark"]  # two patches in a row of the branch
    state, events = feed(tracker, [scores()] * 6, quiet, state, first_seq=3)
    state, events = feed(tracker, [scores(Speech=0.85), scores()], loud, state, first_seq=6)
    assert [e.label for e in events] == ["Speech"]  # sure at once


def test_hysteresis_and_hold(tree):
    tracker = EventTracker(Rules.shipped(default_threshold=0.5, release_ratio=0.6, hold_s=1.0,
                                         smooth_patches=1), tree)
    state, events = feed(tracker, [scores(Speech=0.9), scores(Speech=0.35),
                                   scores(Speech=0.1), scores(Speech=0.7)])
    assert [(e.label, e.kind) for e in events] == [("Speech", "start")]
    _, events = feed(tracker, [scores()] * 4, state=state, first_seq=2)
    assert [(e.kind, e.start, e.end) for e in events] == [("end", 0.0, round(3 * 0.48 + 0.975, 3))]
    assert events[0].id == f"src/Speech/{1000 * 1000}"


def test_noise_classes_are_denied_and_allow_matches_categories(tree):
    tracker = EventTracker(Rules.shipped(), tree)
    assert feed(tracker, [scores(Silence=0.9, Pink_noise=0.9)] * 2)[1] == []
    only_animals = EventTracker(Rules.shipped(allow=["Animal"]), tree)
    _, events = feed(only_animals, [scores(Dog=0.9, Speech=0.9)] * 2)
    assert [e.label for e in events] == ["Dog"]
    no_pets = EventTracker(Rules.shipped(deny=["Domestic animals, pets"]), tree)
    assert feed(no_pets, [scores(Dog=0.9)] * 2)[1] == []


def test_the_gate_follows_the_sources_own_noise_floor(tree):
    tracker = EventTracker(Rules.shipped(), tree)
    speech = scores(Speech=0.9)
    # A steady background at -30 dBFS (loud, far above the absolute gate) starts nothing once
    # the floor has settled on it, even where the model hears speech in it ...
    state, events = feed(tracker, [scores()] * 4, levels_db=-30)
    state, events = feed(tracker, [speech] * 2, levels_db=-30, state=state, first_seq=2)
    assert events == []
    # ... while a sound 10 dB above that floor does.
    _, events = feed(tracker, [speech] * 2, levels_db=-20, state=state, first_seq=3)
    assert [e.label for e in events] == ["Speech"]
    # A quiet source's floor lets its quiet sounds through; nothing passes below min_rms.
    state, _ = feed(tracker, [scores()] * 4, levels_db=-70)
    _, events = feed(tracker, [speech] * 2, levels_db=-50, state=state, first_seq=2)
    assert [e.label for e in events] == ["Speech"]
    state, _ = feed(tracker, [scores()] * 4, levels_db=-90)
    assert feed(tracker, [speech] * 2, levels_db=-70, state=state, first_seq=2)[1] == []


def test_a_source_that_starts_in_the_middle_of_a_sound_still_reports_it(tree):
    tracker = EventTracker(Rules.shipped(confirm_patches=2, sure_score=0.9), tree)
    bleats = [LOUD] * 10 + [QUIET] * 6 + [LOUD] * 10 + [QUIET] * 6 + [LOUD] * 16  # with pauses
    _, events = tracker.update(TrackState(), chunk(0, bleats),
                                   np.array([scores(Speech=0.75)] * 2))
    assert [e.label for e in events] == ["Speech"]  # the floor is the pauses, not the sound


def test_the_floors_quiet_level_is_numpys_percentile_to_the_bit():
    """The floor is state a replica reads back: its own percentile must not move a bit."""
    rng = np.random.default_rng(0)
    for size in [*range(1, 40), 48]:
        levels = rng.integers(-128, 1, (50, size)).astype(np.float32)
        ties = rng.random((50, size)) < 0.5
        levels[ties] = np.broadcast_to(levels[:, :1], levels.shape)[ties]  # a steady background
        expected = np.percentile(levels, FLOOR_PERCENTILE, axis=-1)
        assert quiet_level(levels.copy()).tobytes() == expected.astype(np.float32).tobytes()
        assert expected.dtype == np.float32


def test_onset_and_end_are_placed_where_the_sound_is(tree):
    tracker = EventTracker(Rules.shipped(smooth_patches=1), tree)
    state, _ = feed(tracker, [scores()] * 2, levels_db=QUIET)
    levels = [QUIET] * 20 + [LOUD] * 10 + [QUIET] * 18  # loud from 0.6 s to 0.9 s of the chunk
    speech = scores(Speech=0.9)
    state, events = tracker.update(state, chunk(1, levels), np.array([speech, scores()]))
    assert events[0].start == pytest.approx(0.96 + 0.6)
    # Plain numbers: redis-py writes a numpy scalar's repr, which ZADD refuses.
    assert type(events[0].start) is type(events[0].start_time) is float
    _, events = feed(tracker, [scores()] * 6, QUIET, state=state, first_seq=2)
    assert events[0].end == pytest.approx(0.96 + 0.9)


def test_rules_files_and_their_errors(tmp_path: Path, tree):
    path = tmp_path / "rules.yaml"
    path.write_text("default_threshold: 0.4\nthresholds: {Dog: 0.2}\nhold_s: 2\ndeny: []\n")
    rules = Rules.load(path)
    assert (rules.default_threshold, rules.thresholds["Dog"], rules.hold_s, rules.deny) == (
        0.4, 0.2, 2.0, frozenset())
    assert rules.thresholds.keys() >= Rules.load().thresholds.keys()  # merged into the table
    for text, message in [
        ("treshold: 0.4\n", "treshold: Extra inputs are not permitted"),
        ("hold_s: soon\n", "hold_s: Input should be a valid number"),
        ("release_ratio: 2\n", "release_ratio: Input should be less than or equal to 1"),
        ("hierarchy: some\n", "hierarchy: Input should be 'specific' or 'all'"),
        ("- a list\n", "must be a mapping"),
    ]:
        path.write_text(text)
        with pytest.raises(RulesError, match=f"^{path}: .*{message}"):
            Rules.load(path)
    path.write_text("thresholds: {Dgo: 0.2}\n")
    with pytest.raises(RulesError, match=r"thresholds: unknown label 'Dgo' \(did you mean 'Dog'"):
        Rules.load(path).check_labels(tree, path)
    path.write_text("deny: [Acoustic environment]\n")  # an ontology name, not a class: fine
    Rules.load(path).check_labels(tree, path)
    with pytest.raises(RulesError, match="cannot read"):
        Rules.load(tmp_path / "missing.yaml")


def test_state_and_messages_of_the_previous_version_are_upgraded():
    old_state = msgpack.packb({"session": "s", "next_seq": 3, "old_sessions": [],
                               "open_events": {"Dog": [0.0, 1000.0, 0.48, 1000.48, 0.9]},
                               "window": [], "early": [], "gap_since": None})
    state = SourceState.loads(old_state)
    assert state is not None and state.next_seq == 3
    dog = state.track.open["Dog"]
    assert (dog.label, dog.trigger, dog.end, dog.peak) == ("Dog", "Dog", 0.48 + 0.975, 0.9)
    assert SourceState.loads(state.dumps()) == state
    # a state of the previous release: no smoothing rows yet, an open event's `started`
    previous = msgpack.packb({"version": 2, "session": "s", "next_seq": 3, "track": {
        "open": {"Dog": {"label": "Dog", "trigger": "Dog", "start": 0.0, "start_time": 1.0,
                         "last_up": 0.48, "end": 1.4, "end_time": 2.4, "peak": 0.9,
                         "started": 0.48}},
        "floor_db": -50.0, "before": [-50] * 32, "runs": {"Dog": 2}}})
    track = SourceState.loads(previous).track
    assert (track.recent, track.open["Dog"].peak, len(track.before)) == ([], 0.9, 32)
    old_event = msgpack.packb({"type": "event", "v": 2, "id": "a", "source": "a", "label": "Dog",
                               "kind": "start", "score": 0.9, "start": 0.0, "end": None,
                               "start_time": 1.0, "end_time": None, "model": "yamnet"})
    assert Event.decode(old_event).categories == []
    old_embeddings = msgpack.packb({"type": "embeddings", "v": 1, "source": "a", "session": "s",
                                    "seq": 0, "t": 0.0, "offset": 0.0, "rms": 0.01,
                                    "last": False, "model": "yamnet", "dim": 1,
                                    "data": np.zeros(2, "<f4").tobytes()})
    assert set(Embeddings.decode(old_embeddings).levels()) == {-40.0}


@pytest.mark.parametrize("smooth_patches", [1, 2, 3])
def test_sources_updated_together_get_what_chunk_by_chunk_gives(tree, smooth_patches):
    """The classifier updates a transaction's sources at once: same events, same states."""
    tracker = EventTracker(Rules.shipped(smooth_patches=smooth_patches), tree)
    rng = np.random.default_rng(0)

    def chunks(name: str, count: int, first_seq: int, last: bool = False
               ) -> list[tuple[Embeddings, np.ndarray]]:
        return [(msgspec.structs.replace(
                    chunk(first_seq + n, rng.integers(-60, -10, ENVELOPE_FRAMES).tolist(),
                          last and n == count - 1), source=name),
                 (rng.random((2, len(NAMES))) ** 3).astype(np.float32)) for n in range(count)]

    one_by_one = {name: TrackState() for name in "abc"}
    together, seen = dict(one_by_one), 0
    for turn in range(6):
        batch = {"a": chunks("a", 2, 2 * turn), "b": chunks("b", turn % 2, turn, turn == 3),
                 "c": chunks("c", 1, turn)}
        updated = tracker.update_sources([(together[name], batch[name]) for name in batch])
        for (name, source_chunks), (state, events) in zip(batch.items(), updated, strict=True):
            expected = []
            for message, rows in source_chunks:
                one_by_one[name], found = tracker.update(one_by_one[name], message, rows)
                expected.append(found)
            assert events == expected
            assert msgspec.msgpack.encode(state) == msgspec.msgpack.encode(one_by_one[name])
            together[name], seen = state, seen + sum(map(len, events))
    assert seen > 0
