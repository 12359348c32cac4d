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
