"""A head's classes seen through the AudioSet ontology: which of them are kinds of which.

The event rules (services/classifier/events.py) and the specific ranking (shared/ranking.py) both
read it: an event carries the most specific confident label of its branch and that label's
ancestors as `categories`; a filter naming a label also matches every event it is a category of.
A trained head whose classes are not AudioSet names has no hierarchy: each class stands alone.
"""

from collections.abc import Iterable

import numpy as np

from shared.labels import Ontology

# A more specific class (Dog) is preferred to its ancestor (Animal) when it is confident on its
# own (this score) and next to its ancestor (this fraction of the ancestor's score): Bark at 0.6
# is preferred to Dog at 0.9, Yip at 0.15 is not.
SPECIFIC_MIN_SCORE = 0.1
SPECIFIC_MIN_RATIO = 0.5


def prefers_specific(child_score: float, parent_score: float) -> bool:
    """Whether a descendant scoring child_score is named instead of its ancestor."""
    return child_score >= SPECIFIC_MIN_SCORE and child_score >= SPECIFIC_MIN_RATIO * parent_score


class LabelTree:
    """Class indices of a head related by the ontology (None: no relations at all)."""

    def __init__(self, class_names: list[str], ontology: Ontology | None):
        self.class_names, self.ontology = class_names, ontology
        index = {name: i for i, name in enumerate(class_names)}
        self.categories: list[tuple[str, ...]] = [
            ontology.ancestors(name) if ontology else () for name in class_names]
        ancestors = [[index[a] for a in cats if a in index] for cats in self.categories]
        descendants: list[list[int]] = [[] for _ in class_names]
        for i, above in enumerate(ancestors):
            for a in above:
                descendants[a].append(i)
        self.ancestors = [np.array(a, np.int64) for a in ancestors]
        self.descendants = [np.array(d, np.int64) for d in descendants]
        # As sets too: the label ranking intersects a class's with the confident classes.
        self.more_specific = [frozenset(d) for d in descendants]
        self.related = [frozenset([i, *ancestors[i], *descendants[i]])
                        for i in range(len(class_names))]
        self.known_names = frozenset(class_names) | (ontology.names if ontology else frozenset())

    def matching(self, names: Iterable[str]) -> np.ndarray:
        """bool [C]: the classes named, or whose categories include a name."""
        wanted = set(names)
        return np.array([name in wanted or not wanted.isdisjoint(cats)
                         for name, cats in zip(self.class_names, self.categories, strict=True)],
                        bool)

    def most_specific(self, scores: np.ndarray, i: int, eligible: np.ndarray) -> int:
        """From class i, descend to the highest-scoring eligible descendant that is preferred
        (prefers_specific) to where the descent stands, until none is, or until two unrelated
        ones are (Cat and Dog under Domestic animals): the model cannot tell which, so the
        label both are kinds of is the most specific one it is sure of."""
        while True:
            below = self.descendants[i]
            below = below[eligible[below]] if len(below) else below
            better = [int(d) for d in below if prefers_specific(scores[d], scores[i])]
            if not better:
                return i
            best = max(better, key=lambda d: scores[d])
            if any(d not in self.related[best] for d in better):
                return i
            i = best
