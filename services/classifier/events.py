"""Per-patch scores -> detection events with a start and an end: one event per sound.

The rules (Rules, every key documented in the README's "Event rules") start from the shipped
default_rules.yaml; a user's YAML/JSON file (SOUNDHIVE_EVENTS_CONFIG) overrides any key, and its
`thresholds` are merged into the shipped table. For each 0.975 s patch (every 0.48 s):

- **Smoothing.** The rules see each label's score averaged over the patch and the
  `smooth_patches` - 1 before it (the standard post-processing of sound event detection,
  causal so that events stay live): a label the model says for one patch over another sound
  counts half (measured: precision 0.65 -> 0.70 at the same recall on the benchmark). An
  event's `score` is still the highest score the model itself gave its label.
- **Gate.** The patch's level (from the chunk's 30 ms envelope) must reach `min_rms` (absolute)
  and stand `gate_db` above the source's own noise floor, a running minimum of patch levels that
  rises by at most FLOOR_RISE_DB_PER_S; a quiet room's hiss starts nothing.
- **Start.** A label starts an event when its score reaches its threshold (`thresholds`, else
  `default_threshold`), it is allowed (`allow`/`deny` match a label or any of its categories),
  the gate is open, and no open event of the source is of its branch (the label itself, an
  ancestor or a descendant). With `hierarchy: specific` (the default) the event is named by the
  most specific label preferred to it (shared.hierarchy: Dog 0.8 -> Bark 0.5; Cat and Dog both
  preferred: "Domestic animals, pets") and carries its ancestors as `categories`: one bark is
  one Bark event, not Animal + Dog + Bark + ... With `hierarchy: all` every label is its own
  event (the pre-0.2 behaviour).
- **Confirmation.** The label's branch must have reached its threshold in `confirm_patches`
  patches in a row, unless it scores `sure_score` or more (off by default: smoothing does the
  same work without losing the sounds heard in two patches at 0.5 and 0.3).
- **Dominance.** The label must also score at least `dominance` x every allowed label outside
  its branch in that patch: the patch's main sound starts an event, a lesser guess beside it
  (Purr over a pig's grunt) does not.
- **Rename.** When a descendant (Frog) of an open event's label (Animal) starts, the vaguer
  event ends and the descendant's starts at its onset: the model often names a sound vaguely
  for seconds before it knows it.
- **Keep up.** An open event stays up on any patch where its label, a descendant, or an ancestor
  up to the label that started it scores at least its threshold x `release_ratio`
  (hysteresis); it ends once none has for `hold_s` seconds.
- **Timing.** Start and end are placed inside the patch where the sound is: the first (last)
  30 ms frame louder than halfway, in dB, between the noise floor and the patch's loudest frame;
  a start moves back (up to a patch hop) over the frames before it that stay loud.
- The last chunk of a source, or a new session of it, ends every open event.

The tracker is a pure function of a source's TrackState and its next chunk; the classifier keeps
the state in Redis (sequencer.py) and feeds chunks in sequence order.
"""

import copy
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import params
from shared.errors import UserError
from shared.hierarchy import LabelTree
from shared.messages import (
    CHUNK_HOP_SECONDS,
    ENVELOPE_FRAME_SECONDS,
    ENVELOPE_FRAMES,
    PATCH_HOP_SECONDS,
    Embeddings,
    Event,
)

DEFAULT_RULES_FILE = Path(__file__).with_name("default_rules.yaml")
FLOOR_RISE_DB_PER_S = 0.5  # how fast the noise floor follows a louder background
FLOOR_PERCENTILE = 10  # of a patch's 30 ms frame levels: what it hears of the background
PATCH_FRAMES = int(params.PATCH_SECONDS / ENVELOPE_FRAME_SECONDS)  # 32 whole frames
HOP_FRAMES = round(CHUNK_HOP_SECONDS / ENVELOPE_FRAME_SECONDS)  # 32: a chunk hop, 0.96 s
ONSET_ABOVE_FLOOR_DB = 6.0  # an onset is moved back over frames this far above the floor
LOOKBACK_FRAMES = round(PATCH_HOP_SECONDS / ENVELOPE_FRAME_SECONDS)  # ... at most a patch
# hop (0.48 s) before its patch: further back, the frames were as often the ambience or the
# sound before (measured: mean |onset error| 0.51 -> 0.48 s on the benchmark)
MIN_ATTACK_DB = 3.0  # a patch less above its floor than this has no attack to place

ChunkScores = tuple[Embeddings, np.ndarray]  # a chunk and its patches' scores [P, C]


class RulesError(UserError, ValueError):
    """An unusable rules file (one-line message)."""


class Rules(BaseModel):
    """The event rules; defaults and their reasons in default_rules.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_threshold: float = Field(gt=0, le=1, description="start threshold of a label "
                                     "with none of its own in `thresholds`")
    thresholds: dict[str, Annotated[float, Field(gt=0, le=1)]] = Field(
        description="start threshold per label")
    release_ratio: float = Field(gt=0, le=1, description="an event stays up while a score "
                                 "reaches its threshold x this")
    hold_s: float = Field(ge=0, description="seconds below the release level before an end")
    min_rms: float = Field(ge=0, description="absolute gate: patch RMS (full scale 1.0)")
    gate_db: float = Field(ge=0, description="relative gate: dB above the noise floor")
    allow: frozenset[str] = Field(description="when not empty, only these labels and their "
                                  "descendants make events")
    deny: frozenset[str] = Field(description="these labels and their descendants make none")
    confirm_patches: int = Field(ge=1, le=10, description="patches in a row a label's branch "
                                 "must reach its threshold before an event starts")
    sure_score: float = Field(gt=0, le=1, description="a score this high starts an event "
                              "without waiting for confirm_patches")
    dominance: float = Field(ge=0, le=1, description="a label starts an event only when it "
                             "scores at least this x any label outside its branch")
    hierarchy: Literal["specific", "all"] = Field(description="one event per sound "
                                                  "(specific) or per label (all)")
    smooth_patches: int = Field(ge=1, le=4, description="the rules see each label's mean "
                                "score over this many patches up to the current one (1: none)")

    @classmethod
    def shipped(cls, **changes: Any) -> "Rules":
        """The shipped defaults with some keys changed (checked like a file's)."""
        return cls(**{**_read(DEFAULT_RULES_FILE), **changes})

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Rules":
        """The shipped defaults, overridden by the file at `path` when given."""
        rules = _read(DEFAULT_RULES_FILE)
        if path is not None:
            override = _read(Path(path))
            thresholds = {**rules["thresholds"], **(override.pop("thresholds", None) or {})}
            rules = {**rules, **override, "thresholds": thresholds}
            source = Path(path)
        else:
            source = DEFAULT_RULES_FILE
        try:
            return cls(**rules)
        except ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(map(str, error["loc"]))
            raise RulesError(f"{source}: {key}: {error['msg']}") from None

    def check_labels(self, tree: LabelTree, path: str | Path | None) -> None:
        """Every label the user's file names must be known to the head (or, for allow/deny,
        the ontology); shipped defaults a head lacks are ignored."""
        user = _read(Path(path)) if path is not None else {}
        for key in ("thresholds", "allow", "deny"):
            named = user.get(key) or []
            known = tree.known_names if key != "thresholds" else frozenset(tree.class_names)
            for name in named:
                if name not in known:
                    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
                    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
                    raise RulesError(f"{path}: {key}: unknown label {name!r}{hint}")

    def summary(self) -> dict[str, Any]:
        """The rules as the api shows them (thresholds only where they differ)."""
        shown = self.model_dump()
        shown["allow"], shown["deny"] = sorted(self.allow), sorted(self.deny)
        shown["thresholds"] = {k: v for k, v in sorted(self.thresholds.items())
                               if v != self.default_threshold}
        return shown


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(f"{path}: cannot read event rules ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise RulesError(f"{path}: event rules must be a mapping of keys to values")
    return data


class OpenEvent(msgspec.Struct):
    """A sound still going on, as kept in the source's state (by field name)."""

    label: str
    trigger: str  # the label whose score started it (label or an ancestor of it)
    start: float  # seconds from the source's start
    start_time: float  # unix seconds
    last_up: float  # start of the last patch that kept it up
    end: float  # where its sound was last heard
    end_time: float
    peak: float  # the highest score the model gave its label in the patches that kept it up


class TrackState(msgspec.Struct):
    """A source's open events (by label) and its noise floor (dBFS, None before any patch)."""

    open: dict[str, OpenEvent] = {}
    floor_db: float | None = None
    before: list[int] = []  # the envelope's last LOOKBACK_FRAMES before the next chunk
    runs: dict[str, int] = {}  # labels at threshold: patches in a row
    recent: list[bytes] = []  # the scores of the smooth_patches - 1 patches before (float16)


@dataclass
class _Heard:
    """Patches as the rules see them before they apply (per patch, in order)."""

    stored: list[bytes]  # their scores as the state keeps them (float16 [C] each)
    smoothed: np.ndarray  # [P, C]
    highest: np.ndarray  # the highest of the model's own scores that `smoothed` averages
    up: np.ndarray  # bool [P, C]: eligible and at the release level
    confident: list[list[int]]  # the eligible classes at their start threshold
    level: list[float]  # dB of the mean power
    loudest: list[float]  # the loudest frame's level
    quiet: list[float]  # the background as the patch hears it (quiet_level)
    envelopes: list[np.ndarray]  # per chunk: its level envelope (float32 dBFS)
    leads: list[list[int]]  # per chunk: its first HOP_FRAMES levels, as the state keeps them


class EventTracker:
    """Applies Rules to the patches of a source's chunks, given and returning its state."""

    def __init__(self, rules: Rules, tree: LabelTree, model: str = ""):
        self.rules, self.tree, self.model = rules, tree, model
        names = tree.class_names
        self._index = {name: i for i, name in enumerate(names)}
        on = np.array([rules.thresholds.get(n, rules.default_threshold) for n in names],
                      np.float32)
        allowed = tree.matching(rules.allow) if rules.allow else np.ones(len(names), bool)
        self._eligible = allowed & ~tree.matching(rules.deny)
        # The eligible classes' start and release levels; NaN, which no score reaches, for
        # the others.
        self._on = np.where(self._eligible, on, np.nan)
        self._off = np.where(self._eligible, on * rules.release_ratio, np.nan)
        self._min_db = 20 * np.log10(max(rules.min_rms, 1e-6))
        self._specific = rules.hierarchy == "specific"
        self._keepers_of: dict[tuple[str, str], np.ndarray] = {}
        self._rivals_of: dict[int, np.ndarray | None] = {}  # eligible classes outside i's branch
        self._above = [frozenset(a.tolist()) for a in tree.ancestors]

    def update(self, state: TrackState, chunk: Embeddings, scores: np.ndarray
               ) -> tuple[TrackState, list[Event]]:
        """One chunk's patches (scores [P, C]) in order; returns the new state and events."""
        [(state, [events])] = self.update_sources([(state, [(chunk, scores)])])
        return state, events

    def update_sources(self, sources: Sequence[tuple[TrackState, Sequence[ChunkScores]]]
                       ) -> list[tuple[TrackState, list[list[Event]]]]:
        """update() over each source's chunks in order, for sources scored by one head (one
        dtype, one class count): each source's new state, and its events chunk by chunk. What
        the patches do not owe to the rules' state (their loudness, smoothed scores, and the
        classes at their release and start levels) is computed for all of them at once."""
        chunks = [chunk for _, scored in sources for chunk in scored]
        if not chunks:
            return [(state, []) for state, _ in sources]
        heard = self._hear([state for state, _ in sources],
                           [sum(len(scores) for _, scores in scored) for _, scored in sources],
                           chunks)
        updated, at, chunk_index = [], 0, 0
        for state, scored in sources:
            state, found = _copy(state), []
            for chunk, scores in scored:
                found.append(self._chunk(state, chunk, heard, chunk_index,
                                         range(at, at + len(scores))))
                at, chunk_index = at + len(scores), chunk_index + 1
            updated.append((state, found))
        return updated

    def close(self, state: TrackState, source: str) -> list[Event]:
        """End every open event (the source ended, or a new session of it began)."""
        return [self._event(source, event, "end") for event in state.open.values()]

    def _hear(self, states: list[TrackState], patches: list[int], chunks: list[ChunkScores]
              ) -> "_Heard":
        """The patches of `chunks` (the sources' in turn, `patches` of each) as the rules see
        them before they apply."""
        rows = np.concatenate([scores for _, scores in chunks])
        # each patch's first frame in `levels`: a chunk's envelope has ENVELOPE_FRAMES frames
        hops = [round(chunk.patch_hop_seconds / ENVELOPE_FRAME_SECONDS) for chunk, _ in chunks]
        starts = [n * ENVELOPE_FRAMES + row * hops[n]
                  for n, (_, scores) in enumerate(chunks) for row in range(len(scores))]
        envelopes = [chunk.levels() for chunk, _ in chunks]
        levels = np.concatenate(envelopes)
        leads = levels.reshape(len(chunks), -1)[:, :HOP_FRAMES].astype(int).tolist()
        as_kept, width = rows.astype("<f2").tobytes(), 2 * rows.shape[1]
        stored = [as_kept[at:at + width] for at in range(0, len(as_kept), width)]
        smoothed, highest = self._smooth(states, patches, rows, stored)
        heard = _Heard(stored, smoothed, highest,
                       smoothed >= self._off, [[] for _ in starts],
                       *_loudness(levels[np.add.outer(starts, np.arange(PATCH_FRAMES))]),
                       envelopes, leads)
        patch_of, class_of = (smoothed >= self._on).nonzero()
        for patch, i in zip(patch_of.tolist(), class_of.tolist(), strict=True):
            heard.confident[patch].append(i)
        return heard

    def _chunk(self, state: TrackState, chunk: Embeddings, heard: "_Heard", n: int,
               patches: range) -> list[Event]:
        """The rules over one chunk, chunk `n` of `heard` (its patches are `patches`), changing
        `state` (the tracker's own copy) in place; returns the chunk's events."""
        events: list[Event] = []
        levels, before = heard.envelopes[n], state.before
        # the next chunk's `before`: the last LOOKBACK_FRAMES frames up to a chunk hop into this
        state.before = [*before, *heard.leads[n]][-LOOKBACK_FRAMES:]
        state.recent = self._recent(state, heard.stored[patches.start:patches.stop],
                                    2 * heard.smoothed.shape[1])
        hop = chunk.patch_hop_seconds
        for row, at in enumerate(patches):
            patch = _Patch(chunk.offset + row * hop, chunk.t + row * hop, levels, before,
                           row * round(hop / ENVELOPE_FRAME_SECONDS), state.floor_db,
                           heard.level[at], heard.loudest[at])
            events += self._patch(state, chunk.source, patch,
                                  (heard.smoothed[at], heard.highest[at]), heard.up[at],
                                  heard.confident[at])
            state.floor_db = heard.quiet[at] if state.floor_db is None else \
                min(heard.quiet[at], state.floor_db + FLOOR_RISE_DB_PER_S * hop)
        if chunk.last:
            events += self.close(state, chunk.source)
            state.open = {}
        return events

    def _recent(self, state: TrackState, stored: list[bytes], width: int) -> list[bytes]:
        """The state's scores of the last smooth_patches - 1 patches, after the patches whose
        scores are `stored` (float16, `width` bytes each); rows of another head (a different
        class count) are dropped."""
        size = self.rules.smooth_patches
        if size == 1:
            return list(state.recent)
        earlier = [r for r in state.recent if len(r) == width]
        return [*earlier, *stored][-(size - 1):]

    def _smooth(self, states: list[TrackState], patches: list[int], rows: np.ndarray,
                stored: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Each label's mean and highest score over each patch (rows [P, C]: the sources'
        `patches` in turn; `stored`: the rows as float16) and the smooth_patches - 1 before it
        (kept in the state as float16, so a replica that reads it computes the same): a label
        the model says for one patch over another sound counts half, a sound heard in both
        counts whole."""
        size, classes = self.rules.smooth_patches, rows.shape[1]
        if size == 1:
            return rows, rows
        # Per patch, np.stack(window).mean(axis=0) and .max(axis=0): the window is the patch's
        # row and, before it, the rows its source stored before it (those in its state, then
        # its earlier patches' as stored): all of them for the source's first patch, the last
        # size - 1 for a later one. A window shorter than another's starts with row 0 of
        # `seen`, zeros: scores are not negative, so 0 + x and max(0, x) are x.
        parts = [bytes(2 * classes)]
        lengths: list[int] = []
        ends: list[int] = []  # where in `seen` each patch's row is as stored
        first, position = 0, 1
        for state, count in zip(states, patches, strict=True):
            earlier = [r for r in state.recent if len(r) == 2 * classes]
            parts += [*earlier, *stored[first:first + count]]
            lengths += [min(size - 1, len(earlier) + q) if q else len(earlier)
                        for q in range(count)]
            position += len(earlier)
            ends += range(position, position + count)
            first, position = first + count, position + count
        seen = np.concatenate([np.frombuffer(b"".join(parts), "<f2").reshape(-1, classes), rows],
                              dtype=np.result_type(rows, np.float32))
        own = len(seen) - len(rows)
        windows = seen.take([*([end - depth if depth <= length else 0
                                for end, length in zip(ends, lengths, strict=True)]
                               for depth in range(max(lengths), 0, -1)),
                             list(range(own, own + len(rows)))], axis=0)
        total = np.add.reduce(windows, axis=0)
        # Divided in the scores' dtype, not in float64 (np.mean's way): the same quotients, since
        # a float64 quotient of float32s rounded to float32 is the float32 quotient.
        total /= np.array([[length + 1] for length in lengths], total.dtype)
        return total, np.maximum.reduce(windows, axis=0)

    def _patch(self, state: TrackState, source: str, patch: "_Patch",
               scores: tuple[np.ndarray, np.ndarray], up: np.ndarray, confident: list[int]
               ) -> list[Event]:
        """The rules see the smoothed scores (`scores`: them, and the highest of the model's
        own that they smooth: an event's peak); `up`: the classes at their release level,
        `confident`: those at their start threshold."""
        row, highest = scores
        for event in state.open.values():
            # count_nonzero: any()'s Python wrapper costs more than the check itself
            if np.count_nonzero(up[self._keepers(event.label, event.trigger)]):
                event.peak = max(event.peak, float(highest[self._index[event.label]]))
                if patch.offset >= event.last_up:
                    event.last_up = patch.offset
                    event.end, event.end_time = patch.sound_end()
        events = [self._event(source, state.open.pop(label), "end")
                  for label, event in list(state.open.items())
                  if patch.offset - event.last_up > self.rules.hold_s]
        gate_open = patch.level >= self._min_db and patch.above_floor(self.rules.gate_db)
        state.runs = self._runs(state.runs, confident)
        events += self._starts(state, source, patch, (row, highest), up, gate_open, confident)
        return events

    def _runs(self, runs: dict[str, int], confident: list[int]) -> dict[str, int]:
        """The classes at their start threshold (`confident`) by label, each with the patches
        in a row, up to this one, in which its branch reached a threshold (`runs`: up to the
        last, by label)."""
        names, related = self.tree.class_names, self.tree.related
        ran = [(self._index.get(name, -1), n) for name, n in runs.items()]
        return {names[i]: 1 + max((n for j, n in ran if j in related[i]), default=0)
                for i in confident}

    def _starts(self, state: TrackState, source: str, patch: "_Patch",
                scores: tuple[np.ndarray, np.ndarray], up: np.ndarray, gate_open: bool,
                candidates: list[int]) -> list[Event]:
        """New events, and open ones renamed to a more specific label (not gated: their
        sound is already heard); `scores`: the smoothed ones, and the highest of the model's own
        that they smooth (an event's peak)."""
        events = []
        row, highest = scores
        for trigger in sorted(candidates, key=lambda i: -row[i]):
            confirmed = state.runs[self.tree.class_names[trigger]] >= self.rules.confirm_patches
            if not (confirmed or row[trigger] >= self.rules.sure_score):
                continue
            vaguer = self._open_ancestor(state, trigger)
            # Most candidates are sounds going on: the cheap checks first, dominance (a max
            # over the classes) and the onset only for what starts or is renamed.
            if (vaguer is None and (not gate_open or self._overlaps_open(state, trigger))) \
                    or not self._dominates(row, trigger):
                continue
            if vaguer is not None:  # Animal, then Dog: the sound is renamed, not doubled
                ended = state.open.pop(vaguer)
                events.append(self._event(source, ended, "end"))
                start, start_time = ended.start, ended.start_time
            else:
                start, start_time = patch.sound_start()
            label = self.tree.most_specific(row, trigger, up) if self._specific else trigger
            end, end_time = patch.sound_end()
            event = OpenEvent(self.tree.class_names[label], self.tree.class_names[trigger],
                              start, start_time, patch.offset, end, end_time,
                              float(highest[label]))
            state.open[event.label] = event
            events.append(self._event(source, event, "start"))
        return events

    def _dominates(self, row: np.ndarray, i: int) -> bool:
        """Whether class i scores at least `dominance` x every eligible class outside its
        branch: the patch's main sound, not a lesser guess beside it."""
        if i not in self._rivals_of:
            rivals = self._eligible.copy()
            rivals[sorted(self.tree.related[i])] = False
            self._rivals_of[i] = rivals if rivals.any() else None
        rivals = self._rivals_of[i]
        return rivals is None or row[i] >= self.rules.dominance * np.maximum.reduce(row[rivals])

    def _open_ancestor(self, state: TrackState, i: int) -> str | None:
        """The open event, if any, named by a strict ancestor of class i (specific mode): the
        model often names a sound vaguely (Animal) for a while before it knows it (Frog), and
        the sound is the same, so the better name takes over its onset."""
        if not self._specific:
            return None
        above = self._above[i]
        return next((label for label in state.open if self._index[label] in above), None)

    def _overlaps_open(self, state: TrackState, i: int) -> bool:
        related = self.tree.related[i] if self._specific else {i}
        return any(self._index.get(label, -1) in related for label in state.open)

    def _keepers(self, label: str, trigger: str) -> np.ndarray:
        """Classes whose score keeps an event up: its label, the label's descendants, and the
        ancestors of the label up to its trigger."""
        key = (label, trigger)
        if key not in self._keepers_of:
            i, top = self._index[label], self._index[trigger]
            if self._specific:
                below_top = {top, *self.tree.descendants[top].tolist()}
                chain = [a for a in self.tree.ancestors[i].tolist() if a in below_top]
                self._keepers_of[key] = np.array([i, *self.tree.descendants[i].tolist(), *chain])
            else:
                self._keepers_of[key] = np.array([i])
        return self._keepers_of[key]

    def _event(self, source: str, event: OpenEvent, kind: str) -> Event:
        ends = kind == "end"
        return Event(
            id=f"{source}/{event.label}/{round(event.start_time * 1000)}", source=source,
            label=event.label, kind=kind, score=round(event.peak, 4),
            start=round(event.start, 3), end=round(event.end, 3) if ends else None,
            start_time=round(event.start_time, 3),
            end_time=round(event.end_time, 3) if ends else None, model=self.model,
            categories=list(self.tree.categories[self._index[event.label]]))


def _copy(state: TrackState) -> TrackState:
    """A state the tracker may change: its open events and runs copied (its lists are only
    ever replaced)."""
    return TrackState({k: copy.copy(e) for k, e in state.open.items()}, state.floor_db,
                      state.before, dict(state.runs), state.recent)


def quiet_level(levels: np.ndarray) -> np.ndarray:
    """np.percentile(levels, FLOOR_PERCENTILE, axis=-1) to the bit (numpy 2's linear method:
    the two order statistics around it, interpolated in the levels' dtype), at a fraction of
    its overhead."""
    count = levels.shape[-1]
    position = (count - 1) * (FLOOR_PERCENTILE / 100)
    below = int(position)
    above = min(below + 1, count - 1)
    ordered = np.partition(levels, (below, above), axis=-1)
    low, high = ordered[..., below], ordered[..., above]
    gamma = position - below
    diff = high - low
    if gamma >= 0.5:
        return high - diff * (1 - gamma)
    return low + diff * gamma


def _loudness(levels: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """Per patch (levels [P, PATCH_FRAMES] dBFS): its level (the dB of its mean power), its
    loudest frame, and the background as it hears it: its quiet frames, not its mean, so a
    source that starts in the middle of a sound does not take the sound for its floor."""
    power = np.power(10.0, levels / 10.0)
    # np.mean's own sum and division, without its overhead
    mean_power = (np.add.reduce(power, axis=-1) / np.intp(levels.shape[-1])).astype(power.dtype)
    return ((10 * np.log10(mean_power)).tolist(), np.maximum.reduce(levels, axis=-1).tolist(),
            quiet_level(levels).tolist())


class _Patch:
    """One patch: where it starts, its level envelope (the chunk's from frame `first`; before
    it, where an onset may be, the chunk's earlier frames after the state's `before`) and the
    floor it is heard over."""

    def __init__(self, offset: float, when: float, envelope: np.ndarray, before: list[int],
                 first: int, floor_db: float | None, level: float, loudest: float):
        self.offset, self.when = offset, when
        self.envelope, self.before, self.first = envelope, before, first
        self.levels = envelope[first:first + PATCH_FRAMES]
        self.floor_db, self.level, self.loudest = floor_db, level, loudest

    def _earlier(self) -> np.ndarray:
        """Up to LOOKBACK_FRAMES frames of the envelope before the patch."""
        history = np.concatenate([np.array(self.before, np.float32), self.envelope])
        at = len(self.before) + self.first
        return history[max(0, at - LOOKBACK_FRAMES):at]

    def above_floor(self, gate_db: float) -> bool:
        return self.floor_db is None or self.level >= self.floor_db + gate_db

    def _loud_frames(self) -> np.ndarray:
        floor = self.floor_db if self.floor_db is not None else float(self.levels.min())
        if self.loudest - floor < MIN_ATTACK_DB:
            return np.arange(len(self.levels))
        return (self.levels >= (self.loudest + floor) / 2).nonzero()[0]

    def sound_start(self) -> tuple[float, float]:
        """The first loud frame, moved back while the frames before it (in this patch, then
        before it) stay ONSET_ABOVE_FLOOR_DB over the floor: the model often needs the second
        patch of a sound to be sure of it."""
        first = int(self._loud_frames()[0])
        if self.floor_db is not None:
            envelope = np.concatenate([self._earlier(), self.levels[:first]])
            quiet = (envelope < self.floor_db + ONSET_ABOVE_FLOOR_DB).nonzero()[0]
            first -= len(envelope) - (quiet[-1] + 1 if len(quiet) else 0)
        into = float(first * ENVELOPE_FRAME_SECONDS)  # first may be a numpy integer
        return self.offset + into, self.when + into

    def sound_end(self) -> tuple[float, float]:
        last = self._loud_frames()[-1]
        into = params.PATCH_SECONDS if last == len(self.levels) - 1 else \
            float((last + 1) * ENVELOPE_FRAME_SECONDS)
        return self.offset + into, self.when + into
