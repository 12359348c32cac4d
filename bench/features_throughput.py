"""Features throughput: PCM chunks/s through one features worker over a real Redis, and the raw
model figure (patches/s through the embedder alone) on the same audio, in the same run.

    .venv/bin/python bench/features_throughput.py [--chunks 600] [--batch 32] [--model yamnet]

Needs SOUNDHIVE_MODELS and a redis-server on PATH (or /usr/bin); starts its own on a free port.
"""

import argparse
import shutil
import subprocess
import tempfile
import time

import numpy as np
from machine import CLIPS

from services.capture.service import Chunker
from services.features.service import make_handler
from services.features.settings import FeaturesSettings
from shared import bus, streams
from shared.audio import find_audio_files, load_audio
from shared.messages import PcmChunk
from shared.models import load_embedder
from shared.ports import free_port


def chunks_of_clips(count: int) -> list[PcmChunk]:
    chunker = Chunker()
    audio = np.concatenate([load_audio(f) for f in find_audio_files(CLIPS)])
    out: list[PcmChunk] = []
    while len(out) < count:
        for start, samples in chunker.push(audio):
            out.append(PcmChunk.from_samples(f"bench{len(out) % 8}", "bench", len(out),
                                             time.time(), start / 16000, samples, False))
    return out[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--model", default="yamnet")
    args = parser.parse_args()

    chunks = chunks_of_clips(args.chunks)
    embedder = load_embedder(args.model)
    patches = np.concatenate([c.patches() for c in chunks])
    embedder.embed(patches[:8])  # warm up
    started = time.perf_counter()
    for i in range(0, len(patches), 2 * args.batch):
        embedder.embed(patches[i:i + 2 * args.batch])
    raw_s = time.perf_counter() - started

    port = free_port()
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    with tempfile.TemporaryDirectory() as folder:
        redis_process = subprocess.Popen(
            [server, "--port", str(port), "--save", "", "--dir", folder],
            stdout=subprocess.DEVNULL)
        try:
            settings = FeaturesSettings(redis_url=f"redis://127.0.0.1:{port}/0",
                                        batch_size=args.batch, block_ms=100,
                                        stream_maxlen=args.chunks * 2)
            client = bus.connect(settings.redis_url)
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.ping()
                    break
                except bus.CONNECTION_ERRORS:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            with client.pipeline(transaction=False) as pipe:
                for chunk in chunks:
                    bus.publish(pipe, streams.PCM_STREAM, chunk, settings.stream_maxlen)
                pipe.execute()
            worker = bus.Worker(settings, streams.PCM_STREAM, streams.FEATURES_GROUP, PcmChunk,
                                make_handler(embedder), stopper=bus.Stopper())
            worker.ensure_group()
            started = time.perf_counter()
            while client.xlen(streams.EMBEDDINGS_STREAM) < len(chunks):
                worker.step()
            pipeline_s = time.perf_counter() - started
        finally:
            redis_process.terminate()
            redis_process.wait()

    print(f"model {args.model}, {len(chunks)} chunks ({len(patches)} patches), "
          f"batch {args.batch}")
    print(f"features worker through Redis: {len(chunks) / pipeline_s:8.1f} chunks/s "
          f"({len(chunks) * 0.96 / pipeline_s:.0f}x real time per source)")
    print(f"raw embedder:                  {len(patches) / raw_s:8.1f} patches/s "
          f"(= {len(patches) / raw_s / 2:.1f} chunks/s)")


if __name__ == "__main__":
    main()
