"""The event benchmark's scoring (bench/events_accuracy.py) on hand-made truth and detections:
what finds a sound, what is neutral, and that fragments count once."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))
from events_accuracy import Detection, Judge, Tally, naive_detections, score_scene
from scenes import Background, Scene, TruthEvent

from shared.labels import Ontology

PINK = Background("pink noise", ("Pink noise",), -45.0)
DOG = TruthEvent("dog", "dog", 10.0, 12.0, ("Dog", "Bark"), 10.0)


@pytest.fixture(scope="module")
def judge(models_dir) -> Judge:
    return Judge(Ontology.from_json(models_dir / "ontology.json"))


def scored(judge: Judge, *detections: Detection) -> Tally:
    tally = Tally()
    score_scene(Scene("s", np.zeros(1), PINK, [DOG]), list(detections), judge, tally)
    return tally


def test_an_accepted_label_within_a_second_finds_the_sound(judge):
    assert scored(judge, Detection("Dog", 12.9, 13.5)).found["dog"] == 1
    assert scored(judge, Detection("Dog", 13.1, 13.5)).found["dog"] == 0
    assert scored(judge, Detection("Cat", 10.0, 12.0)).found["dog"] == 0


def test_onset_error_is_from_the_earliest_finder(judge):
    tally = scored(judge, Detection("Bark", 10.5, 11.0), Detection("Dog", 9.2, 10.0))
    assert tally.onset_errors == [pytest.approx(-0.8)]


def test_ancestors_noise_and_the_background_are_neutral(judge):
    tally = scored(judge, Detection("Bark", 10.0, 11.0), Detection("Animal", 10.0, 12.0),
                   Detection("Domestic animals, pets", 10.0, 12.0),
                   Detection("Pink noise", 0.0, 60.0), Detection("Static", 20.0, 21.0))
    report = tally.report(1.0)
    assert (report["neutral"], report["false_pairs"], report["precision"]) == (4, 0, 1.0)


def test_an_ancestor_away_from_its_sound_is_a_false_alarm(judge):
    assert scored(judge, Detection("Animal", 30.0, 31.0)).report(1.0)["false_pairs"] == 1


def test_fragments_count_once_per_sound_and_label(judge):
    tally = scored(judge, Detection("Bark", 10.0, 10.5), Detection("Bark", 11.0, 11.5),
                   Detection("Dog", 11.0, 12.0),  # another true pair
                   Detection("Cat", 10.2, 10.6), Detection("Cat", 11.2, 11.8),  # over the dog
                   Detection("Cat", 30.0, 31.0), Detection("Cat", 40.0, 41.0),  # after it
                   Detection("Cow", 3.0, 4.0))  # before it
    report = tally.report(1.0)
    assert (report["true_pairs"], report["false_pairs"]) == (2, 3)
    assert report["precision"] == pytest.approx(0.4)
    assert report["worst_false_labels"] == [("Cat", 2), ("Cow", 1)]


def test_segments_judge_each_second_without_tolerance(judge):
    tally = scored(judge, Detection("Bark", 10.5, 11.5), Detection("Cat", 20.0, 21.0))
    assert tally.segments == {"hit": 2, "miss": 0, "false": 1}
    assert scored(judge, Detection("Bark", 12.5, 13.0)).segments["miss"] == 2


def test_the_naive_reference_merges_consecutive_patches():
    scores = np.zeros((8, 2), np.float32)
    scores[[1, 2, 5], 1] = [0.5, 0.9, 0.7]
    scores[3, 0] = 0.49
    found = naive_detections(scores, ["Quiet", "Dog"])
    assert [(d.label, d.start, d.end) for d in found] == [
        ("Dog", 0.48, pytest.approx(0.96 + 0.975)), ("Dog", 2.4, pytest.approx(2.4 + 0.975))]
