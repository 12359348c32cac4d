"""Features service: PCM chunks -> embeddings (YAMNet by default, SOUNDHIVE_MODEL=vggish).

Each model is embedded at its own patch hop: YAMNet every 0.48 s (two patches per chunk),
VGGish every 0.96 s as the AudioSet release was framed (one per chunk), so heads trained on
released features see the time scale they were trained on.

One batch holds up to SOUNDHIVE_BATCH_SIZE chunks from any sources; all their patches go through
the embedder together. A worker runs READERS bus loops (consumers of the group) in threads that
take turns at the embedder, so that one reads, decodes and writes while another's batch is in
the model: with one loop the interpreters waited for it (~10 % of the box at saturation).
Replicas share the work through the consumer group; it reads no more while the classifiers are
SOUNDHIVE_BACKLOG_MAX embeddings behind (back-pressure to capture). With several shards
(SOUNDHIVE_SHARDS) each loop serves those of SOUNDHIVE_SHARD_IDS, or all, in turn
(shared/bus.py: run_in_turn); each chunk's embeddings go to its own shard.
Metrics and health on SOUNDHIVE_METRICS_PORT (default 9102).
"""

import logging
import threading
from collections.abc import Callable

import numpy as np

from services.features.settings import FeaturesSettings
from shared import bus, metrics, streams
from shared.messages import Embeddings, PcmChunk
from shared.models import Embedder, QuantizedEmbedder, load_embedder
from shared.topology import Topology

log = logging.getLogger("soundhive.features")

READERS = 2


def embed(embedder: Embedder, chunks: list[PcmChunk]) -> list[Embeddings]:
    """Each chunk's embeddings, all patches through the embedder together (int8 where the
    embedder's are: YAMNet's, which reads the chunks' int16 PCM as it is and computes each one's
    STFT once for its two patches)."""
    hop = embedder.patch_hop_seconds
    quantization = None
    if isinstance(embedder, QuantizedEmbedder):
        pcm = np.stack([chunk.pcm_samples() for chunk in chunks])
        vectors, quantization = embedder.embed_int8(pcm, hop)
    else:
        vectors = embedder.embed(np.concatenate([chunk.patches(hop) for chunk in chunks]))
    vectors = vectors.reshape(len(chunks), -1, embedder.embedding_size)
    return [Embeddings.of(chunk, embedder.name, rows, quantization)
            for chunk, rows in zip(chunks, vectors, strict=True)]


def make_handler(embedder: Embedder) -> bus.Handler[PcmChunk]:
    def handle(batch: list[bus.Delivery[PcmChunk]]) -> list[bus.Output]:
        return [bus.Output(streams.EMBEDDINGS_STREAM, message)
                for message in embed(embedder, [d.message for d in batch])]

    return handle


def main(settings: FeaturesSettings) -> None:
    health = metrics.Health()
    server = metrics.serve(settings.metrics_port, health, settings.metrics_host)
    topology = Topology.connect(settings, settings.block_ms)
    stopper = bus.Stopper()
    # Another shard count, or a Redis too old for the write script, is refused before the
    # model loads and anything reads.
    bus.persist(topology.prepare_to_write, stopper, bus.Weather("features", health))
    embedder = load_embedder(settings.model, threads=settings.threads)
    log.info("features: model %s (%d threads), metrics on :%d", embedder.name,
             settings.threads, server.server_port)
    handle = make_handler(embedder)
    run_together(stopper, [
        [bus.Worker(settings.model_copy(update={"consumer": f"{settings.consumer}-{i}"}),
                    streams.PCM_STREAM, streams.FEATURES_GROUP, PcmChunk, handle, health, stopper,
                    topology.client(shard), output=streams.EMBEDDINGS_STREAM, shard=shard)
         for shard in topology.served]
        for i in range(READERS)], topology.prepare_to_write)


def run_together(stopper: bus.Stopper, loops: list[list[bus.Worker]],
                 prepare: Callable[[], None]) -> None:
    """Each loop (its workers: one per shard served, in turn) in a thread until the stop; a
    loop that fails stops the others, and its error is raised here."""
    failures: list[BaseException] = []

    def run(workers: list[bus.Worker]) -> None:
        try:
            bus.run_in_turn(workers, prepare)
        except BaseException as exc:  # raised in the main thread below
            failures.append(exc)
            stopper.stop()

    threads = [threading.Thread(target=run, args=(workers,), name=f"reader-{i}")
               for i, workers in enumerate(loops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
