"""Ranking labels: plain top-k and the ontology's specific view."""

import numpy as np

from shared.labels import Ontology
from shared.ranking import hit_rank, specific_labels, top_labels

ONTOLOGY = Ontology(
    [
        {"id": "/m/animal", "name": "Animal", "child_ids": ["/m/pets"]},
        {"id": "/m/pets", "name": "Domestic animals, pets", "child_ids": ["/m/dog", "/m/cat"]},
        {"id": "/m/dog", "name": "Dog", "child_ids": ["/m/bark"]},
        {"id": "/m/bark", "name": "Bark", "child_ids": []},
        {"id": "/m/cat", "name": "Cat", "child_ids": []},
        {"id": "/m/music", "name": "Music", "child_ids": ["/m/guitar"]},
        {"id": "/m/guitar", "name": "Guitar", "child_ids": []},
        {"id": "/m/speech", "name": "Speech", "child_ids": []},
    ]
)
NAMES = ["Animal", "Domestic animals, pets", "Dog", "Bark", "Cat", "Music", "Guitar", "Speech"]


def scores(**by_name: float) -> np.ndarray:
    return np.array([by_name.get(n.split()[0].rstrip(",").lower(), 0.0) for n in NAMES], np.float32)


def test_top_labels_highest_first_with_threshold():
    s = scores(animal=0.9, dog=0.7, speech=0.2)
    assert top_labels(s, NAMES, 2) == [("Animal", s[0]), ("Dog", s[2])]
    assert [n for n, _ in top_labels(s, NAMES, 5, threshold=0.5)] == ["Animal", "Dog"]


def test_specific_view_puts_confident_descendants_first():
    s = scores(animal=0.9, domestic=0.85, dog=0.7, bark=0.05, music=0.6, guitar=0.4)
    names = [n for n, _ in specific_labels(s, NAMES, ONTOLOGY, 4)]
    assert names == ["Dog", "Domestic animals, pets", "Animal", "Guitar"]


def test_specific_view_keeps_an_ancestor_before_a_much_weaker_descendant():
    s = scores(dog=0.9, bark=0.3)
    assert [n for n, _ in specific_labels(s, NAMES, ONTOLOGY, 2)] == ["Dog", "Bark"]


def test_specific_view_ignores_unconfident_descendants():
    s = scores(music=0.8, guitar=0.05, speech=0.3)
    assert [n for n, _ in specific_labels(s, NAMES, ONTOLOGY, 2)] == ["Music", "Speech"]


def test_hit_rank():
    labels = [("Animal", 0.9), ("Dog", 0.8)]
    assert hit_rank(labels, ("Dog", "Bark")) == 2
    assert hit_rank(labels, ("Cat",)) is None


def test_descendants_are_transitive():
    assert ONTOLOGY.more_specific_names("Animal") == {
        "Domestic animals, pets",
        "Dog",
        "Bark",
        "Cat",
    }
    assert ONTOLOGY.more_specific_names("Unknown") == frozenset()
