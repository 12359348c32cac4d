"""What the pipeline spends per chunk outside the model, in CPU time: the classifier's label
order of a prediction (`specific_labels`), the features worker's patch cutting, and the bytes of
a chunk's embeddings, float32 against YAMNet's own int8 (with the head's scores compared).

    .venv/bin/python bench/chunk_costs.py [--out bench/results/issue20/chunk_costs.json]

Real YAMNet scores and embeddings of the public clips (../shared/data/clips). Each figure is the
best of 5 repeats of `time.process_time`, so other load on the machine moves it less than wall
time. docs/benchmarks.md has the same measurements of cf237b5 (before this script and int8
embeddings) beside them. Needs SOUNDHIVE_MODELS.
"""

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import machine
import numpy as np

from shared.audio import find_audio_files, load_audio
from shared.inference import classify_file
from shared.labels import Ontology
from shared.messages import CHUNK_HOP_SAMPLES, CHUNK_SAMPLES, Embeddings, PcmChunk
from shared.models import ModelError, QuantizedEmbedder, load_model, models_dir
from shared.native import quiet_native_stderr
from shared.ranking import specific_labels

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
REPO = Path(__file__).resolve().parents[1]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/issue20/chunk_costs.json")
    args = parser.parse_args()
    quiet_native_stderr()
    model = load_model("yamnet")
    files = find_audio_files(CLIPS)
    scores = np.concatenate([classify_file(model, f).patch_scores for f in files])
    ontology = Ontology.from_json(models_dir() / "ontology.json")
    names = model.class_names

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
            lambda: [specific_labels(s, names, ontology, 10) for s in scores], len(scores)),
        "patches_us_per_chunk": best_us(lambda: [c.patches() for c in chunks], len(chunks)),
        "embeddings_bytes_per_chunk": {"float32": len(as_float[0].encode()),
                                       "int8": len(as_int8[0].encode())},
        "int8_embeddings_equal": bool(np.array_equal(read_back, floats)),
        "int8_scores_max_abs_diff": float(np.max(np.abs(
            model.head.score(read_back) - model.head.score(floats)))),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k not in ("machine", "command")}))


if __name__ == "__main__":
    try:
        main()
    except ModelError as exc:
        sys.exit(f"error: {exc}")
