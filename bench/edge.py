"""Edge mode (services/edge): the bytes per microphone that reach the cluster, and how far the
classifier's scores of its int8 embeddings are from those of float32 embeddings, over the
public clips (/work/shared/data/clips or --clips).

    .venv/bin/python bench/edge.py --label after [--clips FOLDER]

Per chunk (0.96 s of a source) capture sends a PcmChunk; an edge sends one Embeddings message,
int8 with its quantization (YAMNet). Bandwidth counts the msgpack message each XADD carries.
Scores: the AudioSet head over each chunk's patches, from the message as the classifier decodes
it, against the head over the embedder's float32 embeddings (the float path). Merges
`{label: figures}` into bench/results/edge.json.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from services.features.service import embed
from shared.audio import load_audio
from shared.messages import (
    CHUNK_HOP_SAMPLES,
    CHUNK_HOP_SECONDS,
    CHUNK_SAMPLES,
    Embeddings,
    PcmChunk,
)
from shared.models import load_embedder, load_head

RESULTS = Path(__file__).parent / "results" / "edge.json"
AUDIO = (".mp3", ".oga", ".ogg", ".wav", ".flac")


def chunks_of(path: Path) -> list[PcmChunk]:
    samples = load_audio(path)
    count = max(1, -(-(len(samples) - CHUNK_SAMPLES) // CHUNK_HOP_SAMPLES) + 1)
    samples = np.pad(samples, (0, max(0, (count - 1) * CHUNK_HOP_SAMPLES + CHUNK_SAMPLES
                                      - len(samples))))
    return [PcmChunk.from_samples(path.stem, "bench", n, 0.0, n * CHUNK_HOP_SECONDS,
                                  samples[n * CHUNK_HOP_SAMPLES:n * CHUNK_HOP_SAMPLES
                                          + CHUNK_SAMPLES], n == count - 1)
            for n in range(count)]


def scores(head, vectors: np.ndarray) -> np.ndarray:
    """The head over each patch alone (a window of one)."""
    return head.score_windows(vectors[:, None, :], np.ones(len(vectors), int))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True)
    parser.add_argument("--clips", type=Path, default=Path("/work/shared/data/clips"))
    args = parser.parse_args()
    embedder, head = load_embedder("yamnet"), load_head("audioset", "yamnet")
    pcm_bytes = edge_bytes = float_bytes = chunks = 0
    worst = 0.0
    files = sorted(p for p in args.clips.iterdir() if p.suffix in AUDIO)
    for path in files:
        pcm = chunks_of(path)
        sent = embed(embedder, pcm)
        floats = [Embeddings.of(c, embedder.name, embedder.embed(c.patches(
            embedder.patch_hop_seconds))) for c in pcm]
        chunks += len(pcm)
        pcm_bytes += sum(len(c.encode()) for c in pcm)
        edge_bytes += sum(len(m.encode()) for m in sent)
        float_bytes += sum(len(m.encode()) for m in floats)
        for edge, ref in zip(sent, floats, strict=True):
            worst = max(worst, float(np.abs(scores(head, edge.vectors())
                                            - scores(head, ref.vectors())).max()))
    per_second = 1 / CHUNK_HOP_SECONDS
    figures = {"chunks": chunks, "files": len(files),
               "pcm_kb_per_s": round(pcm_bytes / chunks * per_second / 1e3, 2),
               "float32_kb_per_s": round(float_bytes / chunks * per_second / 1e3, 2),
               "edge_int8_kb_per_s": round(edge_bytes / chunks * per_second / 1e3, 2),
               "max_score_difference": worst}
    print(json.dumps(figures))
    known = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    RESULTS.write_text(json.dumps({**known, args.label: figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
