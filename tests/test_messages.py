"""Every message type survives encode -> decode unchanged, and names every field it declares."""

import msgpack
import numpy as np
import pytest

from shared.messages import (
    CHUNK_SAMPLES,
    DeadLetter,
    Embeddings,
    Event,
    Message,
    MessageError,
    PcmChunk,
    Prediction,
    SinkStatus,
    SourceStatus,
    level_envelope,
)
from shared.params import PCM_FULL_SCALE

CHUNK = PcmChunk.from_samples("mic1", "s1", 7, 1700000000.5, 6.72,
                              np.linspace(-0.5, 0.5, CHUNK_SAMPLES, dtype=np.float32), False)
EXAMPLES = [
    CHUNK,
    Embeddings.of(CHUNK, "yamnet", np.arange(2 * 1024, dtype=np.float32).reshape(2, 1024)),
    Embeddings.of(CHUNK, "yamnet", (np.arange(2 * 1024) % 256 - 128).reshape(2, 1024),
                  (0.0223, -128)),
    Prediction("mic1", "s1", 7, 1700000000.5, 6.72, 0.1, "audioset",
               [("Dog", 0.91), ("Animal", 0.88)], 1700000001.9),
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
    assert list(wire) == list(message.fields()) == list(type(message).__struct_fields__)


EVENT = msgpack.unpackb(EXAMPLES[4].encode(), raw=False)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\xc1 not msgpack", "not msgpack (MessagePack data is malformed"),
    (msgpack.packb([1, 2]), "not a msgpack map: Expected `object`, got `array`"),
    (msgpack.packb({**EVENT, "type": "pcm"}), "expected a 'event' message, got type 'pcm'"),
    (msgpack.packb({**EVENT, "v": 99}), "event schema version 99 is not supported"),
    (msgpack.packb({**EVENT, "v": [3]}), "event schema version [3] is not supported"),
    (msgpack.packb({k: v for k, v in EVENT.items() if k != "label"}),
     "event message: Object missing required field `label`"),
    (msgpack.packb({**EVENT, "score": "high"}), "event message: Expected `float`, got `str` - at "
                                                "`$.score`"),
    (msgpack.packb({**EVENT, "score": True}), "Expected `float`, got `bool` - at `$.score`"),
    (msgpack.packb({**EVENT, "kind": "middle"}), "Invalid enum value 'middle' - at `$.kind`"),
    (msgpack.packb({**EVENT, "categories": [1]}), "Expected `str`, got `int` - at "
                                                  "`$.categories[0]`"),
    (msgpack.packb({**EVENT, "end": 1.0}), "an event's end and end_time are set exactly when"),
    (msgpack.packb({**EVENT, "v": 2, "kind": "over"}), "Invalid enum value 'over' - at `$.kind`"),
], ids=lambda x: x[:40] if isinstance(x, str) else "")
def test_a_bad_message_is_refused_with_one_line_naming_what_is_wrong(raw: bytes, reason: str):
    with pytest.raises(MessageError) as refused:
        Event.decode(raw)
    assert reason in str(refused.value) and "\n" not in str(refused.value)


def test_a_previous_version_is_upgraded_and_decodes_as_the_current_one():
    old = {k: v for k, v in EVENT.items() if k != "categories"}
    assert Event.decode(msgpack.packb({**old, "v": 2})) == Event.decode(
        msgpack.packb({**EVENT, "categories": []}))


def test_int8_embeddings_stand_for_their_dequantized_values_in_a_quarter_of_the_bytes():
    floats, int8 = EXAMPLES[1], EXAMPLES[2]
    q = np.frombuffer(int8.data, np.int8).astype(np.float32)
    assert np.array_equal(int8.vectors().ravel(), ((q + 128) * 0.0223).astype(np.float32))
    assert int8.rows == floats.rows == 2 and len(int8.data) * 4 == len(floats.data)


def test_float_embeddings_of_version_2_decode_as_version_3_without_quantization():
    wire = msgpack.unpackb(EXAMPLES[1].encode(), raw=False)
    del wire["quantization"]
    assert Embeddings.decode(msgpack.packb({**wire, "v": 2})) == EXAMPLES[1]


def test_int8_embeddings_with_an_unusable_scale_are_refused():
    wire = msgpack.unpackb(EXAMPLES[2].encode(), raw=False)
    with pytest.raises(MessageError, match=r"quantization scale 0\.0 is not a positive number"):
        Embeddings.decode(msgpack.packb({**wire, "quantization": [0.0, -128]}))


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_messages_as_the_previous_code_wrote_them_decode(message: Message):
    """Before msgspec, messages were plain msgpack maps written by msgpack.packb."""
    written = msgpack.packb({"type": message.TYPE, "v": message.VERSION, **message.fields()},
                            use_bin_type=True)
    assert type(message).decode(written) == message


def test_numpy_numbers_are_written_as_plain_numbers():
    """Scores and times computed with numpy are numpy scalars; the wire holds plain numbers."""
    event = Event("a/Dog/0", "a", "Dog", "end", np.float32(0.5), np.float64(1.5), 2.5, 0.0,
                  np.float64(2.0), "yamnet")
    assert Event.decode(event.encode()) == Event("a/Dog/0", "a", "Dog", "end", 0.5, 1.5, 2.5,
                                                 0.0, 2.0, "yamnet")


@pytest.mark.parametrize("amplitude", [0, 1, 3, 30, 300, 3000, 30000, 40000])
def test_the_level_envelope_of_int16_pcm_is_that_of_its_floats(amplitude: int):
    """Features reads the chunk's int16 PCM as it is; the envelope's bytes are those of the
    float samples it stands for, from silence to full scale (clipped)."""
    noise = np.random.default_rng(amplitude).standard_normal(CHUNK_SAMPLES) * amplitude
    pcm = np.clip(noise, -32768, 32767).astype(np.int16)
    assert level_envelope(pcm) == level_envelope(pcm.astype(np.float32) / PCM_FULL_SCALE)
