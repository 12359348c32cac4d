"""Per-chunk scores -> detection events with a start and an end.

Rules (defaults below; a YAML or JSON file overrides any of them, e.g.

    default_threshold: 0.3
    thresholds: {Dog: 0.2, Speech: 0.5}
    release_ratio: 0.7
    hold_s: 1.0
    min_rms: 0.003
    allow: []            # when not empty, only these labels make events
    deny: [Silence]

):
- a label *starts* when a patch scores at least its threshold (`thresholds`, else
  `default_threshold`) and the chunk is louder than `min_rms` (RMS gate for silence);
- while active it stays up on any patch scoring at least threshold x `release_ratio`
  (hysteresis), and *ends* once no patch has done so for `hold_s` seconds, so a barking dog is
  one event, not one per second; the end time is the end of the last patch that kept it up;
- the last chunk of a source, or a new session of it, ends every open event.

The tracker is a pure function of a source's open events and its next chunk; the classifier
keeps the open events in Redis and feeds chunks in sequence order (sequencer.py).
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from shared import params
from shared.errors import UserError
from shared.messages import Event

OpenEvents = dict[str, list[float]]


class RulesError(UserError, ValueError):
    """An unusable rules file (one-line message)."""


# Names AudioSet classes; a trained head with classes of its own need not have them.
DEFAULT_DENY = frozenset({"Silence"})


@dataclass(frozen=True)
class Rules:
    default_threshold: float = 0.3
    thresholds: dict[str, float] = field(default_factory=dict)
    release_ratio: float = 0.7
    hold_s: float = 1.0
    min_rms: float = 0.003
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = DEFAULT_DENY

    @classmethod
    def from_file(cls, path: str | Path) -> "Rules":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise RulesError(f"{path}: cannot read event rules ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise RulesError(f"{path}: event rules must be a mapping")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise RulesError(f"{path}: unknown event rule(s) {', '.join(sorted(unknown))}")
        try:
            rules = cls(
                default_threshold=float(data.get("default_threshold", cls.default_threshold)),
                thresholds={str(k): float(v) for k, v in (data.get("thresholds") or {}).items()},
                release_ratio=float(data.get("release_ratio", cls.release_ratio)),
                hold_s=float(data.get("hold_s", cls.hold_s)),
                min_rms=float(data.get("min_rms", cls.min_rms)),
                allow=frozenset(map(str, data.get("allow") or [])),
                deny=frozenset(map(str, data.get("deny", sorted(cls.deny)) or [])),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise RulesError(f"{path}: bad event rule value ({exc})") from None
        if not 0 < rules.release_ratio <= 1:
            raise RulesError(f"{path}: release_ratio must be in (0, 1]")
        return rules


class EventTracker:
    """Applies Rules to the patches of one chunk, given and returning the source's state."""

    def __init__(self, rules: Rules, class_names: list[str], model: str = ""):
        self.rules = rules
        self.class_names = class_names
        self.model = model  # named in every event
        named = set(rules.thresholds) | rules.allow | (rules.deny - DEFAULT_DENY)
        unknown = named - set(class_names)
        if unknown:
            raise RulesError(f"event rules name unknown label(s): {', '.join(sorted(unknown))}")
        self._on = np.array(
            [rules.thresholds.get(n, rules.default_threshold) for n in class_names], np.float32
        )
        self._off = self._on * rules.release_ratio
        self._allowed = np.array(
            [(not rules.allow or n in rules.allow) and n not in rules.deny for n in class_names]
        )

    def update(
        self,
        open_events: OpenEvents,
        source: str,
        offsets: np.ndarray,
        times: np.ndarray,
        scores: np.ndarray,
        rms: float,
        last: bool,
    ) -> tuple[OpenEvents, list[Event]]:
        """One chunk: patch start offsets and unix times [P], scores [P, C]. Open events map
        label -> [start, start_t, last_up, last_up_t, peak]; the new ones are returned."""
        events: list[Event] = []
        open_ = {label: list(ev) for label, ev in open_events.items()}
        gate = rms >= self.rules.min_rms
        for offset, when, row in zip(offsets, times, scores, strict=True):
            up = np.flatnonzero(self._allowed & (row >= self._off))
            for i in up:
                label = self.class_names[i]
                if label in open_:
                    ev = open_[label]
                    if offset >= ev[2]:
                        ev[2], ev[3] = float(offset), float(when)
                    ev[4] = max(ev[4], float(row[i]))
                elif gate and row[i] >= self._on[i]:
                    open_[label] = [float(offset), float(when), float(offset), float(when),
                                    float(row[i])]
                    events.append(self._start(source, label, open_[label]))
            for label in [k for k, ev in open_.items() if offset - ev[2] > self.rules.hold_s]:
                events.append(self._end(source, label, open_.pop(label)))
        if last:
            events += self.close(open_, source)
            open_ = {}
        return open_, events

    def close(self, open_events: OpenEvents, source: str) -> list[Event]:
        """End every open event (the source ended, or a new session of it began)."""
        return [self._end(source, label, ev) for label, ev in open_events.items()]

    def _start(self, source: str, label: str, ev: list[float]) -> Event:
        start, start_time, _, _, peak = ev
        return Event(_event_id(source, label, start_time), source, label, "start",
                     round(peak, 4), round(start, 3), None, round(start_time, 3), None,
                     self.model)

    def _end(self, source: str, label: str, ev: list[float]) -> Event:
        start, start_time, last_up, last_up_time, peak = ev
        return Event(_event_id(source, label, start_time), source, label, "end", round(peak, 4),
                     round(start, 3), round(last_up + params.PATCH_SECONDS, 3),
                     round(start_time, 3), round(last_up_time + params.PATCH_SECONDS, 3),
                     self.model)


def _event_id(source: str, label: str, start_t: float) -> str:
    return f"{source}/{label}/{round(start_t * 1000)}"
