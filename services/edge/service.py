"""Edge service: capture and features in one process near the microphones (a Raspberry Pi by
a far site's microphones): its sources' chunks are embedded where they are heard and only the
embeddings go to the cluster's embeddings stream (their source's shard), no faster than the
classifier group reads them (SOUNDHIVE_BACKLOG_MAX). YAMNet's embeddings are int8 as its graph
computes them: 2 patches x 1024 bytes, about 2.3 KB a chunk against 46.7 KB of PCM
(bench/edge.py; the classifier's scores are those of the features path). No audio reaches the
cluster, so the recorder keeps no clip of an edge source's events. Capture's metrics and health
on SOUNDHIVE_METRICS_PORT (default 9106).
"""

import logging

from services.capture.service import Publisher
from services.capture.service import main as capture_main
from services.edge.settings import EdgeSettings
from services.features.service import embed
from shared import bus, metrics, streams
from shared.messages import Message, PcmChunk
from shared.models import Embedder, load_embedder

log = logging.getLogger("soundhive.edge")


class EmbeddingPublisher(Publisher):
    """Capture's publisher, sending each chunk's embeddings to the embeddings stream."""

    stream = streams.EMBEDDINGS_STREAM
    reader_group = streams.CLASSIFIER_GROUP
    embedder: Embedder

    def __init__(self, settings: EdgeSettings, health: metrics.Health, stopper: bus.Stopper):
        self.embedder = load_embedder(settings.model, threads=settings.threads)
        log.info("edge: model %s (%d threads)", self.embedder.name, settings.threads)
        super().__init__(settings, health, stopper)

    def messages(self, chunks: list[PcmChunk]) -> list[Message]:
        return list(embed(self.embedder, chunks))


def main(settings: EdgeSettings) -> int:
    """Until every source has ended or SIGTERM/SIGINT; 1 when a source failed."""
    return capture_main(settings, EmbeddingPublisher)
