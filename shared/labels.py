"""Class maps (index,mid,display_name CSVs) and the AudioSet ontology."""

import csv
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path


@dataclass(frozen=True)
class ClassMap:
    mids: list[str]
    names: list[str]

    @classmethod
    def from_csv(cls, path: Path) -> "ClassMap":
        with open(path, newline="", encoding="utf-8") as f:
            rows = sorted(csv.DictReader(f), key=lambda row: int(row["index"]))
        return cls([row["mid"] for row in rows], [row["display_name"] for row in rows])

    def __len__(self) -> int:
        return len(self.names)


class Ontology:
    """The AudioSet ontology: which classes are more specific kinds of which (Dog under Animal)."""

    def __init__(self, nodes: list[dict]):
        self._children = {node["id"]: list(node.get("child_ids", [])) for node in nodes}
        self._mid_of = {node["name"]: node["id"] for node in nodes}
        self._name_of = {node["id"]: node["name"] for node in nodes}
        self._parents: dict[str, list[str]] = {}
        for node in nodes:
            for child in node.get("child_ids", []):
                self._parents.setdefault(child, []).append(node["id"])

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._mid_of)

    def ancestors(self, name: str) -> tuple[str, ...]:
        """Display names of every class above `name`, nearest first (Bark -> Dog, Domestic
        animals, pets, Animal); several parents are walked breadth first; () for unknown names."""
        found: list[str] = []
        level = [self._mid_of[name]] if name in self._mid_of else []
        while level:
            upper = []
            for mid in level:
                for parent in self._parents.get(mid, []):
                    if parent not in found:
                        found.append(parent)
                        upper.append(parent)
            level = upper
        return tuple(self._name_of[mid] for mid in found)

    @classmethod
    def from_json(cls, path: Path) -> "Ontology":
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    @cached_property
    def _descendants(self) -> dict[str, frozenset[str]]:
        memo: dict[str, frozenset[str]] = {}

        def walk(mid: str) -> frozenset[str]:
            if mid not in memo:
                memo[mid] = frozenset()  # guards against cycles in a malformed file
                found: set[str] = set()
                for child in self._children.get(mid, []):
                    found |= {child} | walk(child)
                memo[mid] = frozenset(found)
            return memo[mid]

        for mid in self._children:
            walk(mid)
        return memo

    def descendants(self, mid: str) -> frozenset[str]:
        return self._descendants.get(mid, frozenset())

    def more_specific_names(self, name: str) -> frozenset[str]:
        """Display names of every class below `name` (AudioSet display names are unique)."""
        return self._more_specific_names.get(name, frozenset())

    @cached_property
    def _more_specific_names(self) -> dict[str, frozenset[str]]:
        return {name: frozenset(self._name_of[d] for d in self.descendants(mid)
                                if d in self._name_of)
                for name, mid in self._mid_of.items()}


@dataclass(frozen=True)
class ClipLabels:
    """One line of a labels.jsonl: a clip and the class names a correct classifier may give."""

    file: str
    accept: tuple[str, ...]


def read_clip_labels(path: Path) -> list[ClipLabels]:
    """Parse a labels.jsonl ({"file": ..., "accept": [...]} per line); ValueError names the line."""
    clips = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            clips.append(ClipLabels(str(row["file"]), tuple(str(a) for a in row["accept"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a {{file, accept}} object ({exc})") from None
    return clips
