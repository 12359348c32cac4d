"""The event rules replayed offline on the benchmark's scenes: seconds per try instead of the
minutes of a pipeline run, to tune the rules. The figures of record come from
bench/events_accuracy.py (the real pipeline); this one is for trying.

    .venv/bin/python bench/events_replay.py [--scenes 60] [--seed 0] [--events-config FILE]
        [--set key=value ...] [--cache DIR] [--misses] [--events-out FILE]

It builds the scenes of events_accuracy.py, cuts each into the chunks capture makes (1.455 s
every 0.96 s, the last zero-padded), scores their patches with YAMNet (cached in --cache by seed
and scene count, so the next try only replays) and feeds them in order to the classifier's
EventTracker with the rules (default_rules.yaml, --events-config, then each --set). The pipeline's
scores differ from these only by its int8 embeddings (bench/edge.py: 0.0 on the public clips).
The naive reference is scored on the same patches. --misses lists the sounds naive finds and
the rules do not, with what each system said near them. --events-out writes every event the
rules emit (every field, JSON): a change to the rules' code that should change no event is
checked by comparing the files of the two revisions.
"""

import argparse
import json
import sys
from pathlib import Path

import msgspec
import numpy as np
import yaml
from events_accuracy import (
    DEFAULT_CLIPS,
    Detection,
    Judge,
    _near,
    naive_detections,
    score,
)
from scenes import Scene, build_scenes, load_library

from services.capture.service import Chunker
from services.classifier.events import EventTracker, Rules, TrackState
from shared import params
from shared.hierarchy import LabelTree
from shared.labels import ClassMap, Ontology
from shared.messages import Embeddings, Event, PcmChunk, level_envelope
from shared.models import load_model
from shared.models.catalog import models_dir

DEFAULT_CACHE = Path("/tmp/soundhive-events-replay")


def chunks(scene: Scene) -> list[PcmChunk]:
    """The scene as capture cuts a file source (int16 PCM, as its WAV holds it)."""
    audio = np.clip(np.round(scene.audio * 32768.0), -32768, 32767) / 32768.0
    chunker = Chunker()
    cut = list(chunker.push(audio.astype(np.float32)))
    out = [PcmChunk.from_samples(scene.name, "s", n, start / params.SAMPLE_RATE,
                                 start / params.SAMPLE_RATE, samples, False)
           for n, (start, samples) in enumerate(cut)]
    start, rest = chunker.finish()
    out.append(PcmChunk.from_samples(scene.name, "s", len(out), start / params.SAMPLE_RATE,
                                     start / params.SAMPLE_RATE, rest, True))
    return out


def scene_inputs(scenes: list[Scene], cache: Path, key: str
                 ) -> list[tuple[list[Embeddings], np.ndarray]]:
    """Per scene, its chunks as embeddings messages (envelope, no vectors) and the scores of
    their patches [chunks, 2, classes]."""
    path = cache / f"{key}.npz"
    per_scene = [chunks(scene) for scene in scenes]
    if path.is_file():
        stored = np.load(path)
        scores = [stored[scene.name] for scene in scenes]
    else:
        model = load_model("yamnet")
        scores = [model.score_patches(np.concatenate([c.patches() for c in cs])
                                      ).reshape(len(cs), 2, -1) for cs in per_scene]
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **{s.name: x for s, x in zip(scenes, scores, strict=True)})
    messages = [[Embeddings(c.source, c.session, c.seq, c.t, c.offset, c.rms, c.last, "yamnet",
                            1, np.zeros(2, "<f4").tobytes(), level_envelope(c.samples()))
                 for c in cs] for cs in per_scene]
    return list(zip(messages, scores, strict=True))


def replay(tracker: EventTracker, messages: list[Embeddings], scores: np.ndarray
           ) -> list[Event]:
    state, found = TrackState(), []
    for message, rows in zip(messages, scores, strict=True):
        state, events = tracker.update(state, message, rows)
        found += events
    return found


def detections(events: list[Event]) -> list[Detection]:
    return [Detection(e.label, e.start, e.end) for e in events if e.kind == "end"]


def rules_from(args: argparse.Namespace) -> Rules:
    rules = Rules.load(args.events_config)
    changes = {key: yaml.safe_load(value) for key, value in
               (item.split("=", 1) for item in args.set)}
    return Rules(**{**rules.model_dump(), **changes})


def print_misses(scenes: list[Scene], ours: dict, naive: dict, judge: Judge,
                 scores: list[np.ndarray], names: list[str]) -> None:
    index = {n: i for i, n in enumerate(names)}
    for scene, scene_scores in zip(scenes, scores, strict=True):
        flat = scene_scores.reshape(-1, len(names))
        for truth in scene.events:
            if any(judge.finds(d, truth) for d in ours.get(scene.name, [])):
                continue
            by_naive = [d for d in naive.get(scene.name, []) if judge.finds(d, truth)]
            if not by_naive:
                continue
            lo = int(truth.onset / params.DEFAULT_PATCH_HOP_SECONDS)
            hi = int(truth.offset / params.DEFAULT_PATCH_HOP_SECONDS) + 1
            accept = [index[a] for a in truth.accept if a in index]
            best = max(accept, key=lambda i: flat[lo:hi, i].max())
            near = [f"{d.label}[{d.start:.1f}-{d.end:.1f}]" for d in ours.get(scene.name, [])
                    if _near(d, truth)]
            top = np.argsort(-flat[lo:hi].max(axis=0))[:4]
            print(f"{scene.name} {truth.kind} {truth.onset:.1f}-{truth.offset:.1f} "
                  f"snr {truth.snr_db:.0f} | naive {by_naive[0].label} | best accepted "
                  f"{names[best]} {flat[lo:hi, best].max():.2f} | top "
                  + ", ".join(f"{names[i]} {flat[lo:hi, i].max():.2f}" for i in top)
                  + f" | ours near: {' '.join(near) or '-'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events-config", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a rule changed (YAML value), after --events-config")
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--misses", action="store_true",
                        help="list the sounds naive finds and the rules miss")
    parser.add_argument("--events-out", type=Path,
                        help="write every event of the rules (all fields) here, as JSON")
    args = parser.parse_args()
    scenes = build_scenes(load_library(args.clips), args.scenes, args.seed)
    inputs = scene_inputs(scenes, args.cache, f"seed{args.seed}-n{args.scenes}")
    ontology = Ontology.from_json(models_dir() / "ontology.json")
    names = ClassMap.from_csv(models_dir() / "yamnet_class_map.csv").names
    tracker = EventTracker(rules_from(args), LabelTree(names, ontology), "yamnet")
    judge = Judge(ontology)
    events = {s.name: replay(tracker, m, x) for s, (m, x) in zip(scenes, inputs, strict=True)}
    if args.events_out:
        args.events_out.write_text(json.dumps(msgspec.to_builtins(events)))
    ours = {name: detections(found) for name, found in events.items()}
    naive = {s.name: naive_detections(x.reshape(-1, len(names)), names)
             for s, (_, x) in zip(scenes, inputs, strict=True)}
    if args.misses:
        print_misses(scenes, ours, naive, judge, [x for _, x in inputs], names)
    for name, found in (("rules", ours), ("naive", naive)):
        m = score(scenes, found, judge)
        print(f"{name:6} P {m['precision']:.3f} R {m['recall']:.3f} F1 {m['f1']:.3f} "
              f"onset {m['onset_error_s']} seg {m['segment_f1']:.3f} "
              f"det/min {m['detections_per_min']}", file=sys.stderr)


if __name__ == "__main__":
    main()
