"""The features worker's STFT (shared/frontend.py: stft_magnitude) in CPU time, this checkout's
against the front end as a git revision had it, in turn in one process: µs of CPU per chunk of
stft_magnitude alone (one call per chunk of int16 PCM, as the embedder calls it) and of whole
`embed_int8` batches of BATCH chunks (the model included), one thread; and whether the two give
the same magnitudes and int8 embeddings on every chunk of the public clips (cut as
bench/chunk_costs.py cuts them) and every float32 patch (as `classify_file` cuts them).

    .venv/bin/python bench/stft_cost.py --against REVISION [--rounds 6]
        [--out bench/results/issue20/stft_cost.json]

Each round makes PASSES passes over the chunks, the checkout and the revision in turn in each
(the machine's speed drifts: compare within rounds, not runs); the report has each round's
figures, their medians and ranges, the page faults per chunk, and each round's checkout figure
in % of the revision's. Needs SOUNDHIVE_MODELS.
"""

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

import machine
import numpy as np
from machine import CLIPS, REPO
from threadpoolctl import threadpool_limits

from shared import frontend
from shared.audio import find_audio_files, frame_patches, load_audio
from shared.messages import CHUNK_HOP_SAMPLES, CHUNK_SAMPLES, PATCH_HOP_SECONDS, PcmChunk
from shared.models import ModelError, models_dir
from shared.models import yamnet as yamnet_module
from shared.models.yamnet import YamnetTFLite
from shared.native import quiet_native_stderr

BATCH = 32  # chunks per embed_int8 call (the features worker's default batch)
PASSES = 8  # over the clips' chunks in a round, each front end in turn in each pass


def frontend_of(revision: str) -> ModuleType:
    """shared/frontend.py as git `revision` had it."""
    shown = subprocess.run(["git", "show", f"{revision}:shared/frontend.py"], cwd=REPO,
                           capture_output=True, text=True)
    if shown.returncode != 0:
        sys.exit(f"error: --against {revision}: no shared/frontend.py there")
    spec = importlib.util.spec_from_loader(f"frontend_at_{revision}", loader=None)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    exec(compile(shown.stdout, f"{revision}:shared/frontend.py", "exec"), module.__dict__)
    return module


def clip_chunks() -> np.ndarray:
    """[n, CHUNK_SAMPLES] int16 PCM of the clips' chunks, every chunk hop."""
    chunks = []
    for path in find_audio_files(CLIPS):
        audio = load_audio(path)
        audio = np.pad(audio, (0, max(0, CHUNK_SAMPLES - len(audio))))
        chunks += [PcmChunk.from_samples("x", "x", 0, 0.0, 0.0, audio[s:s + CHUNK_SAMPLES],
                                         False).pcm_samples()
                   for s in range(0, len(audio) - CHUNK_SAMPLES + 1, CHUNK_HOP_SAMPLES)]
    return np.stack(chunks)


def measured(work: Callable[[], object]) -> tuple[float, int]:
    """CPU seconds and minor page faults of `work`."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.process_time()
    work()
    return (time.process_time() - started,
            resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "rounds": [round(v, 1) for v in values]}


def compare(model: YamnetTFLite, fronts: dict[str, ModuleType], chunks: np.ndarray,
            patches: np.ndarray) -> dict:
    """Whether the revision's magnitudes and int8 embeddings equal the checkout's."""
    magnitudes, chunk_q, patch_q = {}, {}, {}
    for name, module in fronts.items():
        yamnet_module.stft_magnitude = module.stft_magnitude
        magnitudes[name] = np.stack([module.stft_magnitude(c, model._window) for c in chunks])
        chunk_q[name] = model.embed_int8(chunks, PATCH_HOP_SECONDS)[0]
        patch_q[name] = model.embed_int8(patches)[0]
    a, b = fronts
    return {"chunks": len(chunks), "patches": len(patches),
            "magnitude_bins": int(magnitudes[a].size),
            "magnitude_bins_differing": int(np.sum(magnitudes[a] != magnitudes[b])),
            "chunk_embeddings_equal": bool(np.array_equal(chunk_q[a], chunk_q[b])),
            "patch_embeddings_equal": bool(np.array_equal(patch_q[a], patch_q[b]))}


def one_round(model: YamnetTFLite, fronts: dict[str, ModuleType], chunks: np.ndarray,
              batches: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """CPU µs and page faults per chunk of each front end's stft_magnitude and of embed_int8
    with it, over PASSES passes with the front ends in turn in each pass."""
    totals = {name: defaultdict(float) for name in fronts}
    for _ in range(PASSES):
        for name, front in fronts.items():
            yamnet_module.stft_magnitude = front.stft_magnitude
            for way, work, count in (
                    ("stft", partial(stft_pass, front, model._window, chunks), len(chunks)),
                    ("embed_int8", partial(embed_pass, model, batches), len(batches) * BATCH)):
                seconds, faults = measured(work)
                totals[name][f"{way}_us_per_chunk"] += seconds * 1e6 / count / PASSES
                totals[name][f"{way}_faults_per_chunk"] += faults / count / PASSES
    return {name: dict(figures) for name, figures in totals.items()}


def stft_pass(front: ModuleType, window: np.ndarray, chunks: np.ndarray) -> None:
    """A chunk at a time, as embed_int8 calls it (with the graph's window)."""
    for chunk in chunks:
        front.stft_magnitude(chunk, window)


def embed_pass(model: YamnetTFLite, batches: list[np.ndarray]) -> None:
    for batch in batches:
        model.embed_int8(batch, PATCH_HOP_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, metavar="REVISION",
                        help="the git revision whose shared/frontend.py to time beside this one")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/issue20/stft_cost.json",
                        help="write the JSON report here (default: %(default)s)")
    args = parser.parse_args()
    if Path(frontend.__file__).resolve() != REPO / "shared/frontend.py":
        sys.exit(f"error: shared is imported from {Path(frontend.__file__).parents[1]}, not "
                 f"this checkout: run with PYTHONPATH={REPO}")
    quiet_native_stderr()
    fronts = {"checkout": frontend, args.against: frontend_of(args.against)}
    model = YamnetTFLite(models_dir() / "yamnet.tflite")
    chunks = clip_chunks()
    batches = [chunks[i:i + BATCH] for i in range(0, len(chunks) // BATCH * BATCH, BATCH)]
    patches = np.concatenate([frame_patches(load_audio(p)) for p in find_audio_files(CLIPS)])
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in fronts}
    with threadpool_limits(1):
        exactness = compare(model, fronts, chunks, patches)
        for _ in range(args.rounds):
            for name, measures in one_round(model, fronts, chunks, batches).items():
                for kind, value in measures.items():
                    figures[name].setdefault(kind, []).append(value)
    report = {"machine": machine.describe(),
              "command": {"argv": sys.argv[1:], "commit": machine.git_commit()},
              "exactness": exactness,
              "cpu": {name: {k: summary(v) for k, v in kinds.items()}
                      for name, kinds in figures.items()},
              "checkout_to_revision": {
                  kind: summary([100 * a / b for a, b in zip(
                      figures["checkout"][kind], figures[args.against][kind], strict=True)])
                  for kind in ("stft_us_per_chunk", "embed_int8_us_per_chunk")},
              "load_average": [round(x, 2) for x in os.getloadavg()]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("exactness", "cpu", "checkout_to_revision")},
                     indent=1))


if __name__ == "__main__":
    try:
        main()
    except ModelError as exc:
        sys.exit(f"error: {exc}")
