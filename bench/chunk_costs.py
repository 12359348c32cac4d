"""What the pipeline spends per chunk outside the model, in CPU time: the classifier's label
order of a prediction (`specific_labels`), the features worker's patch cutting, the bytes of
a chunk's embeddings, float32 against YAMNet's own int8 (with the head's scores compared), and
the classifier's whole loop per chunk (`classifier_loop`: its bus worker reading the clips'
embeddings of SOURCES sources from a private Redis in batches of 1 and of 32, the audioset head
and the shipped rules): its CPU, Redis's, and the Redis commands per chunk; and the event rules
alone (`event_rules`: EventTracker.update over the clips' chunks ROUNDS times as one source,
YAMNet's scores, shipped rules; and `batch_32`: BATCH_SOURCES sources updated together, one chunk
of each per update_sources call, as the classifier at batches of 32), also as each --rules-from
git revision had them, in turn in the same run, with whether their events are the same.

    .venv/bin/python bench/chunk_costs.py [--out bench/results/issue20/chunk_costs.json]
        [--rules-from REVISION ...]

Real YAMNet scores and embeddings of the public clips (../shared/data/clips). Each figure is the
best of 5 repeats of `time.process_time`, so other load on the machine moves it less than wall
time. docs/benchmarks.md has the same measurements of cf237b5 (before this script and int8
embeddings) beside them. Needs SOUNDHIVE_MODELS.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import machine
import msgspec
import numpy as np
import psutil
from machine import CLIPS, REPO
from threadpoolctl import threadpool_limits

from services.classifier import events
from services.classifier.events import EventTracker, Rules
from services.classifier.service import Classifier, label_tree, model_name
from services.classifier.settings import ClassifierSettings
from shared import bus, streams
from shared.audio import find_audio_files, load_audio
from shared.hierarchy import LabelTree
from shared.inference import classify_file
from shared.labels import Ontology
from shared.messages import (
    CHUNK_HOP_SAMPLES,
    CHUNK_HOP_SECONDS,
    CHUNK_SAMPLES,
    Embeddings,
    PcmChunk,
)
from shared.models import ModelError, QuantizedEmbedder, load_head, load_model, models_dir
from shared.models.yamnet import YamnetHead
from shared.native import quiet_native_stderr
from shared.ports import free_port
from shared.ranking import specific_labels
from soundhive.redis_process import RedisProcess

SOURCES = 100
ROUNDS = 12  # chunks per source in each measurement
BATCH_SOURCES = 32  # the event rules' sources updated together (event_rules' batch_32)


def best_us(work: Callable[[], object], per: int, repeats: int = 5, loops: int = 20) -> float:
    """CPU µs per item of `work` (which handles `per` items), best of `repeats`."""
    work()
    times = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(loops):
            work()
        times.append((time.process_time() - started) / loops / per * 1e6)
    return min(times)


def classifier_loop(embeddings: list[Embeddings], batch: int) -> dict:
    """The classifier's bus worker over SOURCES sources' chunks (the clips' embeddings in turn,
    each source in sequence; new sources in each repeat, so that each does the same work),
    already in the embeddings stream, read `batch` at a time: CPU µs
    per chunk of this process (the worker) and of Redis (best of 3), Redis commands per chunk.
    BLAS on one thread, as the services run (services/runner.py)."""
    with tempfile.TemporaryDirectory() as folder, threadpool_limits(1, user_api="blas"):
        server = RedisProcess(Path(folder), port=free_port())
        server.start()
        try:
            client = server.client()
            settings = ClassifierSettings(redis_url=server.url, batch_size=batch, block_ms=1)
            head = load_head(settings.head, settings.model)
            tracker = EventTracker(Rules.load(), label_tree(head.class_names), model_name(head))
            classifier = Classifier(client, head, tracker, settings)
            handled = [0]

            def handle(deliveries: list, acknowledgement: bus.Acknowledgement) -> int:
                handled[0] += len(deliveries)
                return classifier.handle(deliveries, acknowledgement)

            worker = bus.Worker(settings, streams.EMBEDDINGS_STREAM, streams.CLASSIFIER_GROUP,
                                Embeddings, handle, stopper=bus.Stopper(False),
                                client=client, tick=classifier.tick, acknowledging=True)
            worker.ensure_group()
            redis_process = psutil.Process(server.process.pid)  # type: ignore[union-attr]
            best: dict | None = None
            for repeat in range(3):
                with client.pipeline(transaction=False) as pipe:
                    for k in range(ROUNDS):
                        for i in range(SOURCES):
                            chunk = embeddings[(i * 7 + k) % len(embeddings)]
                            bus.publish(pipe, streams.EMBEDDINGS_STREAM, msgspec.structs.replace(
                                chunk, source=f"{repeat}/mic{i}", seq=k))
                    pipe.execute()
                client.config_resetstat()
                redis_before = redis_process.cpu_times()
                started = time.process_time()
                handled[0] = 0
                while handled[0] < ROUNDS * SOURCES:
                    worker.step()
                ours = time.process_time() - started
                redis_after = redis_process.cpu_times()
                theirs = (redis_after.user + redis_after.system
                          - redis_before.user - redis_before.system)
                count = ROUNDS * SOURCES
                commands = {name.removeprefix("cmdstat_"): round(info["calls"] / count, 2)
                            for name, info in client.info("commandstats").items()
                            if name not in ("cmdstat_config|resetstat", "cmdstat_info")}
                run = {"classifier_us_per_chunk": 1e6 * ours / count,
                       "redis_us_per_chunk": 1e6 * theirs / count,
                       "redis_commands_per_chunk": round(sum(commands.values()), 2),
                       "commands": dict(sorted(commands.items(), key=lambda kv: -kv[1]))}
                if best is None or run["classifier_us_per_chunk"] < best["classifier_us_per_chunk"]:
                    best = run
            assert best is not None
            return best
        finally:
            server.stop()


def events_module_of(revision: str) -> ModuleType:
    """services/classifier/events.py as git `revision` had it (the rest as checked out)."""
    shown = subprocess.run(["git", "show", f"{revision}:services/classifier/events.py"],
                           cwd=REPO, capture_output=True, text=True)
    if shown.returncode != 0:
        sys.exit(f"error: --rules-from {revision}: no services/classifier/events.py there")
    source = shown.stdout
    name = f"events_at_{revision.replace('^', '_').replace('~', '_')}"
    spec = importlib.util.spec_from_loader(name, loader=None, origin=events.__file__)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    module.__file__ = events.__file__  # its default_rules.yaml
    sys.modules[name] = module  # msgspec resolves the state's annotations through it
    exec(compile(source, f"{revision}:services/classifier/events.py", "exec"), module.__dict__)
    return module


def event_rules(chunks: list[Embeddings], scores: np.ndarray, tree: LabelTree,
                revisions: dict[str, ModuleType], repeats: int = 5) -> dict:
    """CPU µs per chunk of EventTracker.update (shipped rules) over `chunks` as one source's
    (scores [chunks, patches, classes]), for this checkout and each revision's events module,
    in turn (best of `repeats`); and whether each revision's events equal this checkout's. The
    same for `batch_32`: a sixth of the chunks as each of BATCH_SOURCES sources (source i's
    from chunk 7i on), one chunk of each per update_sources call."""
    modules = {"checkout": events, **revisions}
    trackers = {k: m.EventTracker(m.Rules.load(), tree, "yamnet") for k, m in modules.items()}
    length = len(chunks) // 6
    sources = [[(msgspec.structs.replace(chunks[(7 * i + n) % len(chunks)], source=f"mic{i}",
                                         seq=n, offset=chunks[n].offset, t=chunks[n].t),
                 scores[(7 * i + n) % len(chunks)]) for n in range(length)]
               for i in range(BATCH_SOURCES)]

    def replay(name: str) -> list[dict]:
        state, found = modules[name].TrackState(), []
        for chunk, rows in zip(chunks, scores, strict=True):
            state, new = trackers[name].update(state, chunk, rows)
            found += new
        return [msgspec.to_builtins(e) for e in found]

    def replay_batched(name: str) -> list[dict]:
        states, found = [modules[name].TrackState() for _ in sources], []
        for n in range(length):
            updated = trackers[name].update_sources(
                [(state, [scored[n]]) for state, scored in zip(states, sources, strict=True)])
            states = [state for state, _ in updated]
            found += [event for _, [new] in updated for event in new]
        return [msgspec.to_builtins(e) for e in found]

    def measure(work: Callable[[str], list[dict]], names: list[str], count: int) -> dict:
        found = {name: work(name) for name in names}
        best = dict.fromkeys(names, float("inf"))
        for _ in range(repeats):
            for name in names:
                started = time.process_time()
                work(name)
                best[name] = min(best[name], (time.process_time() - started) / count * 1e6)
        return {"chunks": count, "events": len(found["checkout"]), "us_per_chunk": best,
                "same_events": {r: found[r] == found["checkout"] for r in names[1:]}}

    batched = [name for name in modules if hasattr(trackers[name], "update_sources")]
    return {**measure(replay, list(modules), len(chunks)),
            "batch_32": measure(replay_batched, batched, length * BATCH_SOURCES)}


def head_us_per_chunk(head: YamnetHead, embeddings: np.ndarray) -> dict:
    """CPU µs per chunk of the YAMNet head's scores, for a batch of one chunk (two patches: what
    the classifier scores at low load) and of 32; BLAS on one thread, as the services run."""
    with threadpool_limits(1, user_api="blas"):
        return {f"batch_{n}": best_us(lambda n=n: head.score(embeddings[:2 * n]), n)
                for n in (1, 32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/issue20/chunk_costs.json",
                        help="write the JSON report here (default: %(default)s)")
    parser.add_argument("--rules-from", nargs="*", default=[], metavar="REVISION",
                        help="also time the event rules as these git revisions had them")
    args = parser.parse_args()
    earlier_rules = {revision: events_module_of(revision) for revision in args.rules_from}
    quiet_native_stderr()
    model = load_model("yamnet")
    files = find_audio_files(CLIPS)
    scores = np.concatenate([classify_file(model, f).patch_scores for f in files])
    ontology = Ontology.from_json(models_dir() / "ontology.json")
    names = model.class_names
    tree = LabelTree(names, ontology)

    chunks = []
    for path in files:
        audio = load_audio(path)
        audio = np.pad(audio, (0, max(0, CHUNK_SAMPLES - len(audio))))
        chunks += [PcmChunk.from_samples("x", "x", 0, 0.0, 0.0, audio[s:s + CHUNK_SAMPLES], False)
                   for s in range(0, len(audio) - CHUNK_SAMPLES + 1, CHUNK_HOP_SAMPLES)]
    embedder = model.embedder
    assert isinstance(embedder, QuantizedEmbedder)
    patches = np.concatenate([c.patches() for c in chunks])
    q, quantization = embedder.embed_int8(patches)
    floats = embedder.embed(patches)
    as_float = [Embeddings.of(c, "yamnet", floats[2 * i:2 * i + 2]) for i, c in enumerate(chunks)]
    as_int8 = [Embeddings.of(c, "yamnet", q[2 * i:2 * i + 2], quantization)
               for i, c in enumerate(chunks)]
    read_back = np.concatenate([Embeddings.decode(m.encode()).vectors() for m in as_int8])

    report = {
        "machine": machine.describe(),
        "command": {"argv": sys.argv[1:], "commit": machine.git_commit()},
        "predictions": len(scores), "chunks": len(chunks),
        "specific_labels_us_per_prediction": best_us(
            lambda: [specific_labels(s, tree, 10) for s in scores], len(scores)),
        "patches_us_per_chunk": best_us(lambda: [c.patches() for c in chunks], len(chunks)),
        "head_us_per_chunk": head_us_per_chunk(model.head, floats),
        "embeddings_bytes_per_chunk": {"float32": len(as_float[0].encode()),
                                       "int8": len(as_int8[0].encode())},
        "int8_embeddings_equal": bool(np.array_equal(read_back, floats)),
        "int8_scores_max_abs_diff": float(np.max(np.abs(
            model.head.score(read_back) - model.head.score(floats)))),
        "classifier_loop": {f"batch_{batch}": classifier_loop(as_int8, batch)
                            for batch in (1, 32)},
        "event_rules": event_rules(
            [msgspec.structs.replace(m, seq=n, offset=n * CHUNK_HOP_SECONDS,
                                     t=n * CHUNK_HOP_SECONDS)
             for n, m in enumerate(as_int8 * ROUNDS)],
            np.tile(model.head.score(read_back).reshape(len(chunks), 2, -1), (ROUNDS, 1, 1)),
            tree, earlier_rules),
    }
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k not in ("machine", "command")}))


if __name__ == "__main__":
    try:
        main()
    except ModelError as exc:
        sys.exit(f"error: {exc}")
