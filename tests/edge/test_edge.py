"""Edge mode: `soundhive serve edge` captures and embeds in one process and sends only
embeddings; the classifier's predictions and events are those of capture -> features."""

from pathlib import Path

from pipeline_helpers import Services, dog_scene, read_all, wait_for

from services.features.service import embed
from shared import streams
from shared.audio import load_audio
from shared.messages import CHUNK_SAMPLES, Event, PcmChunk, Prediction, SourceStatus
from shared.models import load_embedder


def finished_run(services: Services, clips_dir: Path, tmp_path: Path, *processes: str
                 ) -> tuple[list[Prediction], list[Event]]:
    """The dog scene through `processes` and the classifier, once every chunk is predicted."""
    path, _ = dog_scene(clips_dir, tmp_path)
    services.start("classifier")
    for name in processes:
        args = ("--fast", "--source", f"dog=file:{path}") if name in ("capture", "edge") else ()
        services.start(name, *args)
    client = services.server.client()

    def done() -> list[Prediction] | None:
        statuses = [SourceStatus.decode(raw) for raw in client.hvals(streams.SOURCES_HASH)]
        predictions = read_all(client, streams.PREDICTIONS_STREAM, Prediction)
        finished = statuses and statuses[0].state == "finished"
        return predictions if finished and len(predictions) == statuses[0].seq + 1 else None

    predictions = wait_for(done, 180, "every chunk predicted")
    return predictions, read_all(client, streams.EVENTS_STREAM, Event)


def test_edge_sends_int8_embeddings_and_scores_as_the_features_path(
        services: Services, clips_dir: Path, tmp_path: Path):
    predictions, events = finished_run(services, clips_dir, tmp_path, "edge")
    client = services.server.client()
    assert not client.exists(streams.PCM_STREAM)  # no audio left the edge
    client.flushall()
    services.stop_all()
    reference, reference_events = finished_run(services, clips_dir, tmp_path,
                                               "features", "capture")
    assert [e.label for e in events] == [e.label for e in reference_events] and events
    for edge, ref in zip(predictions, reference, strict=True):
        assert edge.seq == ref.seq and edge.labels == ref.labels


def test_an_edge_message_is_int8_and_a_tenth_of_its_chunk(clips_dir: Path):
    chunk = PcmChunk.from_samples("dog", "s", 0, 0.0, 0.0,
                                  load_audio(clips_dir / "dog.mp3")[:CHUNK_SAMPLES], False)
    message = embed(load_embedder("yamnet"), [chunk])[0]
    assert message.quantization is not None
    assert len(message.encode()) * 10 < len(chunk.encode())
