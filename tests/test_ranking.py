"""Ranking labels: plain top-k and the ontology's specific view."""

import numpy as np

from shared.hierarchy import LabelTree
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
TREE = LabelTree(NAMES, ONTOLOGY)


def scores(**by_name: float) -> np.ndarray:
    return np.array([by_name.get(n.split()[0].rstrip(",").lower(), 0.0) for n in NAMES], np.float32)


def test_top_labels_highest_first_with_threshold():
    s = scores(animal=0.9, dog=0.7, speech=0.2)
    assert top_labels(s, NAMES, 2) == [("Animal", s[0]), ("Dog", s[2])]
    assert [n for n, _ in top_labels(s, NAMES, 5, threshold=0.5)] == ["Animal", "Dog"]


def test_specific_view_puts_confident_descendants_first():
    s = scores(animal=0.9, domestic=0.85, dog=0.7, bark=0.05, music=0.6, guitar=0.4)
    names = [n for n, _ in specific_labels(s, TREE, 4)]
    assert names == ["Dog", "Domestic animals, pets", "Animal", "Guitar"]


def test_specific_view_keeps_an_ancestor_before_a_much_weaker_descendant():
    s = scores(dog=0.9, bark=0.3)
    assert [n for n, _ in specific_labels(s, TREE, 2)] == ["Dog", "Bark"]


def test_specific_view_ignores_unconfident_descendants():
    s = scores(music=0.8, guitar=0.05, speech=0.3)
    assert [n for n, _ in specific_labels(s, TREE, 2)] == ["Music", "Speech"]


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


def _specific_labels_walking_every_class(scores, class_names, ontology, k):
    """specific_labels as it was before it stopped walking the ontology for the unconfident
    classes (the reference of the test below)."""
    from shared.hierarchy import SPECIFIC_MIN_SCORE, prefers_specific
    order = np.argsort(-scores, kind="stable")
    confident_order = order[:np.count_nonzero(scores >= SPECIFIC_MIN_SCORE)].tolist()
    rank = {class_names[i]: position for position, i in enumerate(confident_order)}
    index_of = {class_names[i]: i for i in confident_order}
    ranked, placed = [], set()

    def place(i):
        if i in placed:
            return
        placed.add(i)
        below = rank.keys() & ontology.more_specific_names(class_names[i])
        for name in sorted(below, key=rank.__getitem__):
            if prefers_specific(scores[index_of[name]], scores[i]):
                place(index_of[name])
        ranked.append(i)

    for i in order.tolist():
        if len(ranked) >= k:
            break
        place(i)
    return [(class_names[i], float(scores[i])) for i in ranked[:k]]


def test_specific_view_equals_the_walk_over_every_class(models_dir):
    """On the AudioSet ontology: few and many confident classes, ties, unconfident parents of
    confident children, and k below and above the number confident."""
    from shared.labels import ClassMap
    ontology = Ontology.from_json(models_dir / "ontology.json")
    names = ClassMap.from_csv(models_dir / "yamnet_class_map.csv").names
    tree = LabelTree(names, ontology)
    rng = np.random.default_rng(0)
    parents = {i: [j for j, other in enumerate(names)
                   if other in ontology.more_specific_names(name)] for i, name in enumerate(names)}
    with_children = [i for i, below in parents.items() if below]
    for trial in range(400):
        s = (rng.random(len(names)) ** rng.choice([1, 4, 12, 40])).astype(np.float32)
        if trial % 3 == 0:  # ties
            s = np.round(s * 20) / 20
        if trial % 4 == 0:  # an unconfident parent under confident descendants
            parent = int(rng.choice(with_children))
            s[parent] = 0.05
            s[parents[parent]] = rng.uniform(0.1, 0.9, len(parents[parent]))
        for k in (1, 3, 10, 30):
            assert specific_labels(s, tree, k) == \
                _specific_labels_walking_every_class(s, names, ontology, k)
