"""Many sources written to Redis as the pipeline writes them: capture's statuses, the
classifier's predictions (shared/status.py's record) and detections, for the api and the
dashboard at scale without hundreds of microphones."""

import time

import msgspec
import redis

from shared import bus, detections, status, streams
from shared.messages import Event, Prediction, SourceStatus
from shared.writes import Writes

LABELS = ("Speech", "Bark", "Music", "Glass", "Siren", "Silence")


def source_id(index: int) -> str:
    return f"mic-{index:03d}"


def state_of(index: int) -> str:
    """Every 10th failed, every 25th retrying, every 50th finished, the rest running."""
    return ("failed" if index % 10 == 9 else "retrying" if index % 25 == 24
            else "finished" if index % 50 == 48 else "running")


def rms_of(index: int) -> float:
    """Every 7th source silent (-80 dBFS), the others between about -40 and -10 dBFS."""
    return 1e-4 if index % 7 == 6 else 0.01 * (1 + index % 30)


def write_sources(client: redis.Redis, count: int, levels: int = 5) -> None:
    """`count` sources, each with its status, `levels` predictions and one event, going on for
    every 3rd source (ended for the others)."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    writes = Writes()
    for index in range(count):
        source, state = source_id(index), state_of(index)
        pipe.hset(streams.SOURCES_HASH, source, SourceStatus(
            source, state, "device unplugged" if state == "failed" else "", rms_of(index), 10,
            now).encode())
        label = LABELS[index % len(LABELS)]
        score = round(0.3 + (index % 70) / 100, 4)
        status.record(writes, [Prediction(source, "s1", seq, now, seq * 1.45, rms_of(index) *
                                          (1 + seq / 10), "yamnet", [(label, score),
                                                                     ("Animal", 0.1)],
                                          now - (levels - seq) * 1.45)
                               for seq in range(levels)])
        write_event(pipe, source, label, now - count + index, ongoing=index % 3 == 0)
    writes.queue(pipe)
    pipe.execute()


def write_event(pipe: redis.client.Pipeline, source: str, label: str, start_time: float,
                ongoing: bool = True) -> Event:
    """An event as the classifier writes it: to the events stream and the detections (its start,
    then, unless ongoing, its end)."""
    event = Event(id=f"{source}/{label}/{start_time:.3f}", source=source, label=label,
                  kind="start", score=0.9, start=1.0, end=None, start_time=start_time,
                  end_time=None, model="yamnet")
    writes = Writes()
    writes.add(*bus.xadd(streams.EVENTS_STREAM, event))
    detections.write(writes, event)
    if not ongoing:
        event = msgspec.structs.replace(event, kind="end", end=2.0, end_time=start_time + 1)
        writes.add(*bus.xadd(streams.EVENTS_STREAM, event))
        detections.write(writes, event)
    writes.queue(pipe)
    return event
