"""Event accuracy: how well soundhive's events tell what sounded and when, on soundscapes with
ground truth, next to the naive reference a user would write in ten lines.

    .venv/bin/python bench/events_accuracy.py [--scenes 60] [--seed 0] [--events-config FILE]
        [--clips ../shared/data/clips [--clips-only]] [--keep DIR]
        [--out bench/results/events_accuracy.json]

Scenes (bench/scenes.py: recordings, backgrounds, placement): 60 s each, public recordings at
0-20 dB SNR over pink/brown noise and ambiences, truth = (onset, offset, accepted labels) of each
placed sound. Both systems hear the same WAV files:
  - soundhive: `soundhive up --source file:DIR --fast --exit-when-done` (the real pipeline:
    capture, features, classifier with its event rules, notifier, api; an embedded Redis), with
    the default rules or --events-config FILE; the events are the lines `up` prints as each
    event ends (source, label, start s, end s, ...);
  - naive: the same YAMNet (shared.models) scoring every 0.975 s patch every 0.48 s; a label
    is an event while its score is >= 0.5, consecutive patches merged (start of the first patch
    to end of the last).

Scoring (the same for both; a detection is (label, start, end); `categories`, where events
carry them, change nothing: a detection is judged by its label):
  - a truth event is FOUND by a detection whose label is one of the truth's accepted labels and
    whose span overlaps [onset - 1 s, offset + 1 s] (TOLERANCE_S); recall = found / truth events;
  - a detection that finds nothing is NEUTRAL when its label is (a) an AudioSet ancestor of an
    accepted label of a truth event it overlaps (same tolerance), e.g. Animal over a dog; (b) a
    noise or background label: the ontology's Noise and Acoustic environment branches, Silence,
    Hum, Field recording, Wind noise (microphone); or (c) a label of the scene's background or
    an ancestor of one (bench/scenes.py names what each background is heard as). Otherwise it
    is a FALSE ALARM;
  - precision counts distinct (sound, label) pairs, so that fragments cannot inflate or deflate
    it: a true pair is (truth event found, label that found it); a false pair is (the sound the
    false alarm overlaps most, its label), where a false alarm over no truth event belongs to the
    stretch of background between two truth events. Precision = true pairs / (true + false
    pairs); event F1 = 2PR / (P + R);
  - onset error: for each found truth, the start of the earliest detection that found it minus
    the truth's onset; the mean of its absolute value (and the signed mean: negative = early);
  - segment F1 over 1 s segments (no tolerance): in each segment, each active truth event is a
    hit if an active detection has one of its accepted labels, else a miss; each active
    detection label that is neither accepted by nor neutral to the active truths (or the
    background) is a false alarm; F1 = 2 hits / (2 hits + misses + false alarms);
  - recall per kind of sound, and the labels with the most false pairs.

Writes the JSON report (with the command and commit) and prints a compact table. --keep DIR keeps
the scene WAVs, truth.jsonl and each system's detections there. Needs SOUNDHIVE_MODELS,
redis-server and the Debian packages of bench/scenes.py's recordings (espeak-ng openttd-opensfx
asterisk-core-sounds-en-wav; ./scripts/install.sh installs them). Every process it starts stops
with it (`up` stops its services).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import machine
import numpy as np
import soundfile
from scenes import (
    SCENE_S,
    Background,
    Library,
    Scene,
    ScenesError,
    TruthEvent,
    build_scenes,
    load_library,
)

from shared import params
from shared.audio import frame_patches, load_audio
from shared.config import usable_cpus
from shared.labels import ClassMap, Ontology
from shared.models import ModelError, load_model
from shared.models.catalog import missing_files, models_dir, spec

DEFAULT_CLIPS = machine.REPO.parent / "shared/data/clips"
DEFAULT_OUT = machine.REPO / "bench/results/events_accuracy.json"
TOLERANCE_S = 1.0
SEGMENT_S = 1.0
NAIVE_THRESHOLD = 0.5
NOISE_BRANCHES = ("Noise", "Acoustic environment")
NOISE_LABELS = ("Silence", "Hum", "Field recording", "Wind noise (microphone)")
WORST = 10
# Unset for `up`: its own embedded Redis, YAMNet with its AudioSet head (as the naive reference),
# and no rules but --events-config's.
UNSET_FOR_UP = ("REDIS_URL", "SOUNDHIVE_MODEL", "SOUNDHIVE_HEAD", "SOUNDHIVE_EVENTS_CONFIG")


class BenchError(Exception):
    """The benchmark cannot run (one-line message)."""


@dataclass(frozen=True)
class Detection:
    label: str
    start: float
    end: float


class Judge:
    """Decides whether a detection finds a truth event, is neutral to it, or is a false alarm."""

    def __init__(self, ontology: Ontology):
        self.ontology = ontology
        self.noise = frozenset(NOISE_LABELS).union(
            *({root} | ontology.more_specific_names(root) for root in NOISE_BRANCHES))

    def finds(self, detection: Detection, truth: TruthEvent) -> bool:
        return detection.label in truth.accept and _near(detection, truth)

    def neutral(self, label: str, truths: list[TruthEvent], background: Background) -> bool:
        """Noise, the background, or an ancestor of what one of `truths` may be called."""
        return (label in self.noise or self._covers(label, background.labels)
                or any(self._covers(label, t.accept) for t in truths))

    def _covers(self, label: str, names: tuple[str, ...]) -> bool:
        """`label` is one of `names` or an AudioSet ancestor of one."""
        below = self.ontology.more_specific_names(label)
        return any(name == label or name in below for name in names)


def _near(detection: Detection, truth: TruthEvent) -> bool:
    """Overlaps the truth event widened by TOLERANCE_S either side."""
    return (detection.start < truth.offset + TOLERANCE_S
            and detection.end > truth.onset - TOLERANCE_S)


def _overlap(detection: Detection, truth: TruthEvent) -> float:
    return min(detection.end, truth.offset + TOLERANCE_S) - max(detection.start,
                                                               truth.onset - TOLERANCE_S)


@dataclass
class Tally:
    """Counts over scenes; `report` turns them into the figures."""

    truths: Counter = field(default_factory=Counter)  # per kind
    found: Counter = field(default_factory=Counter)  # per kind
    onset_errors: list[float] = field(default_factory=list)
    true_pairs: int = 0
    false_pairs: Counter = field(default_factory=Counter)  # per label
    false_by_background: Counter = field(default_factory=Counter)
    detections: int = 0
    neutral: int = 0
    segments: Counter = field(default_factory=Counter)  # hit, miss, false

    def report(self, minutes: float) -> dict:
        truths, found = sum(self.truths.values()), sum(self.found.values())
        false = sum(self.false_pairs.values())
        precision = self.true_pairs / (self.true_pairs + false) if self.true_pairs + false else 0.0
        recall = found / truths if truths else 0.0
        seg = self.segments
        seg_den = 2 * seg["hit"] + seg["miss"] + seg["false"]
        errors = np.array(self.onset_errors)
        return {
            "precision": round(precision, 3), "recall": round(recall, 3),
            "f1": round(_f1(precision, recall), 3),
            "onset_error_s": round(float(np.abs(errors).mean()), 3) if errors.size else None,
            "onset_bias_s": round(float(errors.mean()), 3) if errors.size else None,
            "segment_f1": round(2 * seg["hit"] / seg_den, 3) if seg_den else 0.0,
            "truth_events": truths, "found": found, "true_pairs": self.true_pairs,
            "false_pairs": false, "detections": self.detections, "neutral": self.neutral,
            "detections_per_min": round(self.detections / minutes, 1),
            "segments": dict(seg),
            "truths_by_kind": dict(sorted(self.truths.items())),
            "recall_by_kind": {kind: round(self.found[kind] / n, 3)
                               for kind, n in sorted(self.truths.items())},
            "worst_false_labels": self.false_pairs.most_common(WORST),
            "false_pairs_by_background": dict(sorted(self.false_by_background.items())),
        }


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def score_scene(scene: Scene, detections: list[Detection], judge: Judge, tally: Tally) -> None:
    """Adds one scene's truth and detections to `tally`."""
    truths = scene.events
    true_pairs: set[tuple[int, str]] = set()
    false_pairs: set[tuple[tuple[str, int], str]] = set()
    for i, truth in enumerate(truths):
        tally.truths[truth.kind] += 1
        finders = [d for d in detections if judge.finds(d, truth)]
        if finders:
            tally.found[truth.kind] += 1
            tally.onset_errors.append(min(d.start for d in finders) - truth.onset)
            true_pairs |= {(i, d.label) for d in finders}
    for d in detections:
        tally.detections += 1
        near = [t for t in truths if _near(d, t)]
        if any(judge.finds(d, t) for t in near):
            continue
        if judge.neutral(d.label, near, scene.background):
            tally.neutral += 1
            continue
        false_pairs.add((_sound(d, truths), d.label))
    tally.true_pairs += len(true_pairs)
    tally.false_pairs.update(label for _, label in false_pairs)
    tally.false_by_background[scene.background.name] += len(false_pairs)
    _score_segments(scene, detections, judge, tally.segments)


def _sound(detection: Detection, truths: list[TruthEvent]) -> tuple[str, int]:
    """What a false alarm sounded over: the truth event it overlaps most, else the stretch of
    background after the last truth event that starts before it."""
    overlaps = [_overlap(detection, t) for t in truths]
    if overlaps and max(overlaps) > 0:
        return ("event", int(np.argmax(overlaps)))
    return ("background", sum(t.onset <= detection.start for t in truths))


def _score_segments(scene: Scene, detections: list[Detection], judge: Judge,
                    counts: Counter) -> None:
    for k in range(int(np.ceil(SCENE_S / SEGMENT_S))):
        lo, hi = k * SEGMENT_S, (k + 1) * SEGMENT_S
        truths = [t for t in scene.events if t.onset < hi and t.offset > lo]
        labels = {d.label for d in detections if d.start < hi and d.end > lo}
        hits = sum(bool(labels & set(t.accept)) for t in truths)
        counts["hit"] += hits
        counts["miss"] += len(truths) - hits
        counts["false"] += sum(
            not any(label in t.accept for t in truths)
            and not judge.neutral(label, truths, scene.background) for label in labels)


def naive_detections(scores: np.ndarray, class_names: list[str]) -> list[Detection]:
    """Per label, each run of consecutive patches scoring >= NAIVE_THRESHOLD is one event."""
    hop = params.DEFAULT_PATCH_HOP_SECONDS
    found = []
    for c in np.flatnonzero((scores >= NAIVE_THRESHOLD).any(axis=0)):
        edges = np.diff(np.concatenate([[0], (scores[:, c] >= NAIVE_THRESHOLD).astype(int), [0]]))
        for first, after in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1),
                                strict=True):
            found.append(Detection(class_names[c], round(first * hop, 3),
                                   round((after - 1) * hop + params.PATCH_SECONDS, 3)))
    return sorted(found, key=lambda d: (d.start, d.label))


def run_naive(files: dict[str, Path]) -> dict[str, list[Detection]]:
    try:
        model = load_model("yamnet", threads=usable_cpus())
    except ModelError as exc:
        raise BenchError(str(exc)) from None
    return {name: naive_detections(model.score_patches(frame_patches(load_audio(path))),
                                   model.class_names)
            for name, path in files.items()}


def run_soundhive(folder: Path, events_config: Path | None, log: Path
                  ) -> dict[str, list[Detection]]:
    """`soundhive up` over every WAV in `folder` (one source each, named by file name)."""
    command = [sys.executable, "-m", "soundhive", "up", "--source", f"file:{folder}", "--fast",
               "--exit-when-done", "--ephemeral", "--api-port", "0", "--metrics-port-base", "0"]
    if events_config is not None:
        command += ["--events-config", str(events_config)]
    env = {k: v for k, v in os.environ.items() if k not in UNSET_FOR_UP}
    with log.open("w") as errors:
        done = subprocess.run(command, cwd=machine.REPO, env=env, stdout=subprocess.PIPE,
                              stderr=errors, text=True)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"soundhive up exited {done.returncode}: {tail[0]}")
    return parse_event_lines(done.stdout)


def parse_event_lines(text: str) -> dict[str, list[Detection]]:
    """`up`'s event lines (source, label, start, end, ... tab-separated), by source without its
    extension."""
    found: dict[str, list[Detection]] = {}
    for line in text.splitlines():
        fields = line.split("\t")
        try:
            detection = Detection(fields[1], float(fields[2]), float(fields[3]))
        except (IndexError, ValueError):
            raise BenchError(f"not an event line from soundhive up: {line!r}") from None
        found.setdefault(Path(fields[0]).stem, []).append(detection)
    return found


def score(scenes: list[Scene], detections: dict[str, list[Detection]], judge: Judge) -> dict:
    tally = Tally()
    for scene in scenes:
        score_scene(scene, detections.get(scene.name, []), judge, tally)
    return tally.report(len(scenes) * SCENE_S / 60)


def write_scenes(scenes: list[Scene], folder: Path) -> dict[str, Path]:
    """The scenes' WAVs (the only audio in `folder`, which is made or emptied of WAVs) and
    their truth, truth.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.wav"):
        stale.unlink()
    files = {}
    for scene in scenes:
        files[scene.name] = folder / f"{scene.name}.wav"
        soundfile.write(files[scene.name], scene.audio, params.SAMPLE_RATE, subtype="PCM_16")
    with (folder / "truth.jsonl").open("w") as out:
        for scene in scenes:
            out.write(json.dumps({"scene": scene.name, "background": asdict(scene.background),
                                  "events": [asdict(e) for e in scene.events]}) + "\n")
    return files


def write_detections(path: Path, detections: dict[str, list[Detection]]) -> None:
    with path.open("w") as out:
        for scene, found in sorted(detections.items()):
            for d in found:
                out.write(f"{scene}\t{d.label}\t{d.start:.2f}\t{d.end:.2f}\n")


def check_labels(library: Library, scenes: list[Scene], class_map: Path) -> None:
    """Every accepted and background label is a class of the model (a misspelt one could never
    be found)."""
    used = {label for r in library.recordings for label in r.accept}
    used |= {label for scene in scenes for label in scene.background.labels}
    unknown = used - set(ClassMap.from_csv(class_map).names)
    if unknown:
        raise BenchError(f"labels that {class_map.name} lacks: {', '.join(sorted(unknown))}")


def measure(args: argparse.Namespace, work: Path) -> dict:
    started = time.monotonic()
    missing = missing_files(spec("yamnet"))
    if missing:
        raise BenchError(f"{models_dir()} lacks {', '.join(missing)} (set SOUNDHIVE_MODELS)")
    judge = Judge(Ontology.from_json(models_dir() / "ontology.json"))
    library = load_library(args.clips, args.clips_only)
    scenes = build_scenes(library, args.scenes, args.seed)
    check_labels(library, scenes, models_dir() / "yamnet_class_map.csv")
    files = write_scenes(scenes, work / "scenes")
    built = time.monotonic()
    naive = run_naive(files)
    naive_done = time.monotonic()
    pipeline = run_soundhive(work / "scenes", args.events_config, work / "soundhive-up.log")
    finished = time.monotonic()
    write_detections(work / "naive.tsv", naive)
    write_detections(work / "soundhive.tsv", pipeline)
    name = f"soundhive ({args.events_config.name if args.events_config else 'default rules'})"
    return {
        "command": {"argv": sys.argv[1:], "commit": machine.git_commit()},
        "machine": machine.describe(),
        "set": {"seed": args.seed, "scenes": len(scenes), "scene_s": SCENE_S,
                "clips": str(args.clips), "clips_only": args.clips_only,
                "truth_events": sum(len(s.events) for s in scenes),
                "backgrounds": dict(Counter(s.background.name for s in scenes)),
                "events_config": str(args.events_config) if args.events_config else None},
        "systems": {name: score(scenes, pipeline, judge),
                    f"naive YAMNet >= {NAIVE_THRESHOLD}": score(scenes, naive, judge)},
        "runtime_s": {"build": round(built - started, 1), "naive": round(naive_done - built, 1),
                      "soundhive_up": round(finished - naive_done, 1),
                      "total": round(finished - started, 1)},
    }


def print_table(report: dict) -> None:
    systems = report["systems"]
    width = max(map(len, systems)) + 2
    s = report["set"]
    print(f"{s['scenes']} scenes of {s['scene_s']:.0f} s (seed {s['seed']}), "
          f"{s['truth_events']} sounds; {report['runtime_s']['total']:.0f} s")
    print(f"{'':{width}}precision  recall  event F1  onset err  segment F1  events/min")
    for name, m in systems.items():
        onset = f"{m['onset_error_s']:.2f} s" if m["onset_error_s"] is not None else "-"
        print(f"{name:{width}}{m['precision']:9.2f}  {m['recall']:6.2f}  {m['f1']:8.2f}  "
              f"{onset:>9}  {m['segment_f1']:10.2f}  {m['detections_per_min']:10.1f}")
    print("recall by kind (sounds): " + " | ".join(systems))
    first = next(iter(systems.values()))
    for kind, count in first["truths_by_kind"].items():
        print(f"  {kind:20} {count:3d}  " + "  ".join(f"{m['recall_by_kind'][kind]:4.2f}"
                                                   for m in systems.values()))
    for name, m in systems.items():
        print(f"most false alarms, {name}: "
              + ", ".join(f"{label} {n}" for label, n in m["worst_false_labels"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=60, help="number of 60 s scenes")
    parser.add_argument("--seed", type=int, default=0,
                        help="scene set (0 to tune on; another to check generalisation)")
    parser.add_argument("--events-config", type=Path,
                        help="event rules file for soundhive (default: its default rules)")
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS,
                        help="the public clips with labels.jsonl")
    parser.add_argument("--clips-only", action="store_true",
                        help="sounds from --clips alone (another set, e.g. a hidden one, with "
                             "its labels.jsonl), not the packaged recordings too")
    parser.add_argument("--keep", type=Path,
                        help="write the scene WAVs, truth.jsonl and detections here and keep them")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON report")
    args = parser.parse_args()
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")
    if args.events_config is not None and not args.events_config.is_file():
        parser.error(f"{args.events_config}: no such events config file")
    try:
        if args.keep is not None:
            report = measure(args, args.keep)
        else:
            with tempfile.TemporaryDirectory(prefix="soundhive-scenes-") as work:
                report = measure(args, Path(work))
    except (BenchError, ScenesError) as exc:
        sys.exit(f"events_accuracy: {exc}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
