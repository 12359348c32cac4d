"""Every message type survives encode -> decode unchanged, and names every field it declares."""

import dataclasses

import msgpack
import numpy as np
import pytest

from shared.messages import (
    CHUNK_SAMPLES,
    DeadLetter,
    Embeddings,
    Event,
    Message,
    PcmChunk,
    Prediction,
    SinkStatus,
    SourceStatus,
)

CHUNK = PcmChunk.from_samples("mic1", "s1", 7, 1700000000.5, 6.72,
                              np.linspace(-0.5, 0.5, CHUNK_SAMPLES, dtype=np.float32), False)
EXAMPLES = [
    CHUNK,
    Embeddings.of(CHUNK, "yamnet", np.arange(2 * 1024, dtype=np.float32).reshape(2, 1024)),
    Prediction("mic1", "s1", 7, 1700000000.5, 6.72, 0.1, "audioset",
               [["Dog", 0.91], ["Animal", 0.88]], 1700000001.9),
    Event("mic1/Dog/1700000000500", "mic1", "Dog", "start", 0.91, 6.72, None, 1700000000.5,
          None, "yamnet"),
    SourceStatus("mic1", "running", "", 0.1, 7, 1700000001.0),
    SinkStatus("mqtt", "connecting", "refused", None, 3, 1, 0, 1700000001.0),
    DeadLetter("soundhive:pcm", "features", "1-0", "bad", 1, b"\x00" * 10, 10, 1700000001.0),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message):
    assert type(message).decode(message.encode()) == message


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_the_wire_holds_type_version_and_exactly_the_declared_fields(message: Message):
    wire = msgpack.unpackb(message.encode(), raw=False)
    assert wire.pop("type") == message.TYPE and wire.pop("v") == message.VERSION
    assert list(wire) == list(message.FIELDS) == [f.name for f in dataclasses.fields(message)]
