"""The pipeline's messages: msgpack maps with a `type` and a schema version `v`, checked on read.

Every message class is a msgspec Struct whose fields (names, types, order) are declared once,
with TYPE and VERSION, and is read with `Class.decode(raw)`: msgspec's typed decoding, then the
class's own check(). Anything malformed raises MessageError (a one-line reason): not msgpack,
another type, a schema version neither current nor in UPGRADES, a missing or mistyped field (named),
a wrong sample count.
Workers send such entries to the dead-letter stream (shared/bus.py).

PCM chunks are self-contained. Patches (0.975 s model inputs) start every 0.48 s on a grid that
runs through the whole source; one chunk carries PATCHES_PER_CHUNK whole patches:

    chunk n starts at sample n * CHUNK_HOP_SAMPLES (0.96 s) and holds CHUNK_SAMPLES (1.455 s);
    consecutive chunks overlap by CHUNK_SAMPLES - CHUNK_HOP_SAMPLES (0.495 s), so a features worker
    embeds any chunk alone and the patch grid has no gap and no repeat.

The last chunk of a finite source (file) is zero-padded and has `last` set.
"""

import time
from collections.abc import Callable
from functools import cache
from typing import Any, ClassVar, Literal, Self, TypeVar

import msgspec
import numpy as np

from shared import params
from shared.audio import hop_samples
from shared.errors import UserError

PATCHES_PER_CHUNK = 2
PATCH_HOP_SAMPLES = hop_samples(params.DEFAULT_PATCH_HOP_SECONDS)  # 7680
CHUNK_HOP_SAMPLES = PATCHES_PER_CHUNK * PATCH_HOP_SAMPLES  # 15360 = 0.96 s
CHUNK_SAMPLES = (PATCHES_PER_CHUNK - 1) * PATCH_HOP_SAMPLES + params.PATCH_SAMPLES  # 23280
CHUNK_HOP_SECONDS = CHUNK_HOP_SAMPLES / params.SAMPLE_RATE
PATCH_HOP_SECONDS = PATCH_HOP_SAMPLES / params.SAMPLE_RATE

# The level envelope: 30 ms frames; a patch hop (0.48 s) is 16 of them, a patch 32 (plus 15 ms).
ENVELOPE_FRAME_SAMPLES = 480
ENVELOPE_FRAMES = CHUNK_SAMPLES // ENVELOPE_FRAME_SAMPLES  # 48
ENVELOPE_FRAME_SECONDS = ENVELOPE_FRAME_SAMPLES / params.SAMPLE_RATE
ENVELOPE_FLOOR_DB = -120

_ROWS_PER_CHUNK = tuple(n for n in range(PATCHES_PER_CHUNK, 0, -1) if PATCHES_PER_CHUNK % n == 0)


class MessageError(UserError, ValueError):
    """A message that cannot be used; the text says why, on one line."""


class _Header(msgspec.Struct):
    """The keys every message has, read before the rest: which class and version it is."""

    type: Any = None
    v: Any = None


def _number(obj: Any) -> Any:
    """A numpy scalar (what arithmetic on arrays yields) as the Python number it holds."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise NotImplementedError(f"cannot encode a {type(obj).__name__}")


_HEADER = msgspec.msgpack.Decoder(_Header)
ENCODER = msgspec.msgpack.Encoder(enc_hook=_number)  # messages and the classifier's state


class Message(msgspec.Struct, frozen=True):
    """A message's fields are its Struct fields (names, types, order, defaults); on the wire they
    sit beside `type` (TYPE) and `v` (VERSION)."""

    TYPE: ClassVar[str]
    VERSION: ClassVar[int]
    # Older schema versions still read: version -> a function turning such a map into the
    # current one (messages written before an upgrade are still in the streams and in Redis).
    UPGRADES: ClassVar[dict[int, Callable[[dict], dict]]] = {}

    def encode(self) -> bytes:
        return ENCODER.encode({"type": self.TYPE, "v": self.VERSION, **self.fields()})

    @classmethod
    def decode(cls, raw: bytes) -> Self:
        header = _read("not a msgpack map", lambda: _HEADER.decode(raw))
        if header.type != cls.TYPE:
            raise MessageError(f"expected a {cls.TYPE!r} message, got type {header.type!r}")
        if header.v == cls.VERSION:
            message = _read(f"{cls.TYPE} message", lambda: _decoder(cls).decode(raw))
        elif isinstance(header.v, int) and header.v in cls.UPGRADES:
            upgraded = cls.UPGRADES[header.v](msgspec.msgpack.decode(raw))
            message = _read(f"{cls.TYPE} message", lambda: msgspec.convert(upgraded, cls))
        else:
            raise MessageError(
                f"{cls.TYPE} schema version {header.v!r} is not supported "
                f"(this worker reads version {cls.VERSION})"
            )
        message.check()
        return message

    def check(self) -> None:
        """Checks beyond field types; raise MessageError."""

    def fields(self) -> dict[str, Any]:
        """The message's fields by name (as the API and the notifiers show it)."""
        return msgspec.structs.asdict(self)


_T = TypeVar("_T")


@cache
def _decoder(cls: type[Message]) -> msgspec.msgpack.Decoder:
    return msgspec.msgpack.Decoder(cls)


def _read(what: str, decode: Callable[[], _T]) -> _T:
    """decode(), its msgspec errors as a MessageError: not msgpack, or `what` and the field
    that is missing or mistyped."""
    try:
        return decode()
    except msgspec.ValidationError as exc:  # a DecodeError too: first
        raise MessageError(f"{what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MessageError(f"not msgpack ({exc})") from None


class PcmChunk(Message):
    """CHUNK_SAMPLES of 16 kHz mono int16 little-endian audio from one source."""

    TYPE: ClassVar[str] = "pcm"
    VERSION: ClassVar[int] = 1

    source: str
    session: str  # one capture run of the source; (source, session, seq) names a chunk
    seq: int  # 0, 1, 2, ... per session
    t: float  # capture time (unix seconds) of the first sample
    offset: float  # seconds from the start of the source to the first sample
    rms: float  # RMS of the chunk's samples, full scale = 1.0
    pcm: bytes
    last: bool = False

    @classmethod
    def from_samples(
        cls, source: str, session: str, seq: int, t: float, offset: float, samples: np.ndarray,
        last: bool,
    ) -> "PcmChunk":
        """float32 samples in [-1, 1] (exactly CHUNK_SAMPLES) -> a chunk."""
        pcm = np.clip(np.round(samples * params.PCM_FULL_SCALE), -32768, 32767).astype("<i2")
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
        return cls(source, session, seq, t, offset, rms, pcm.tobytes(), last)

    def check(self) -> None:
        if not self.source:
            raise MessageError("pcm message has an empty source id")
        if self.seq < 0:
            raise MessageError(f"pcm message has a negative sequence number {self.seq}")
        if len(self.pcm) != 2 * CHUNK_SAMPLES:
            raise MessageError(
                f"pcm chunk has {len(self.pcm) / 2:g} samples, expected {CHUNK_SAMPLES}"
            )

    def samples(self) -> np.ndarray:
        return self.pcm_samples().astype(np.float32) / params.PCM_FULL_SCALE

    def pcm_samples(self) -> np.ndarray:
        """The chunk's int16 samples (a read-only view)."""
        return np.frombuffer(self.pcm, "<i2")

    def patches(self, hop_seconds: float = PATCH_HOP_SECONDS) -> np.ndarray:
        """[n, PATCH_SAMPLES] float32 model inputs starting every hop within the chunk's hop:
        PATCHES_PER_CHUNK at the default 0.48 s, one at the AudioSet release's 0.96 s."""
        hop = hop_samples(hop_seconds)
        if CHUNK_HOP_SAMPLES % hop:
            raise ValueError(f"a patch hop of {hop_seconds} s does not divide the chunk hop "
                             f"({CHUNK_HOP_SECONDS} s)")
        # Only the patches' samples are converted, straight from the int16 (as samples() does).
        windows = np.lib.stride_tricks.as_strided(
            self.pcm_samples(), (CHUNK_HOP_SAMPLES // hop, params.PATCH_SAMPLES), (hop * 2, 2),
            writeable=False)
        return windows.astype(np.float32) / params.PCM_FULL_SCALE


def level_envelope(samples: np.ndarray) -> bytes:
    """Loudness of consecutive ENVELOPE_FRAME_SAMPLES frames (30 ms) of a chunk, in whole dBFS
    (int8, floored at ENVELOPE_FLOOR_DB): where in a patch a sound is, for the event rules.
    `samples`: float32 in [-1, 1], or int16 PCM read as those floats (the same bytes: each
    frame's float64 sum of squares is exact either way, so its integer sum scaled is the same)."""
    frames = samples[: ENVELOPE_FRAMES * ENVELOPE_FRAME_SAMPLES].reshape(ENVELOPE_FRAMES, -1)
    if samples.dtype == np.int16:
        wide = frames.astype(np.int64)
        energy = np.einsum("ij,ij->i", wide, wide) * (1.0 / params.PCM_FULL_SCALE ** 2)
        power = energy / frames.shape[1]
    else:
        power = np.mean(np.square(frames, dtype=np.float64), axis=1)
    db = 10 * np.log10(np.maximum(power, 10 ** (ENVELOPE_FLOOR_DB / 10)))
    return np.clip(np.round(db), ENVELOPE_FLOOR_DB, 0).astype(np.int8).tobytes()


def _flat_envelope(rms: float) -> bytes:
    """A chunk's envelope known only by its RMS (embeddings written before version 2)."""
    db = 20 * np.log10(max(rms, 10 ** (ENVELOPE_FLOOR_DB / 20)))
    return np.full(ENVELOPE_FRAMES, max(round(db), ENVELOPE_FLOOR_DB), np.int8).tobytes()


class Embeddings(Message):
    """The embeddings of one chunk's patches (row-major [rows, dim]): PATCHES_PER_CHUNK rows
    every 0.48 s, or one for a model framed as the AudioSet release (every 0.96 s); and the
    chunk's level envelope (level_envelope). float32, or int8 with their `quantization` where
    the model's embeddings are int8 to begin with (YAMNet's): a quarter of the bytes, the same
    values."""

    TYPE: ClassVar[str] = "embeddings"
    VERSION: ClassVar[int] = 3
    UPGRADES: ClassVar[dict[int, Callable[[dict], dict]]] = {
        1: lambda obj: {**obj, "envelope": _flat_envelope(obj.get("rms", 0.0))},
        2: lambda obj: obj,  # float32, as a version 3 without quantization
    }

    source: str
    session: str
    seq: int
    t: float
    offset: float
    rms: float
    last: bool
    model: str
    dim: int
    data: bytes
    envelope: bytes  # int8 dBFS per 30 ms frame of the chunk
    # (scale, zero_point): `data` holds int8 q standing for (q - zero_point) * scale; None:
    # float32.
    quantization: tuple[float, int] | None = None

    @classmethod
    def of(cls, chunk: PcmChunk, model: str, vectors: np.ndarray,
           quantization: tuple[float, int] | None = None) -> "Embeddings":
        """float32 `vectors` [rows, dim], or int8 ones with their `quantization`."""
        vectors = np.ascontiguousarray(vectors, "<f4" if quantization is None else np.int8)
        return cls(chunk.source, chunk.session, chunk.seq, chunk.t, chunk.offset, chunk.rms,
                   chunk.last, model, int(vectors.shape[1]), vectors.tobytes(),
                   level_envelope(chunk.pcm_samples()), quantization)

    def check(self) -> None:
        row_bytes = self._value_bytes * self.dim
        if self.dim <= 0 or len(self.data) % row_bytes \
                or len(self.data) // row_bytes not in _ROWS_PER_CHUNK:
            raise MessageError(
                f"embeddings hold {len(self.data)} bytes, expected "
                f"{' or '.join(map(str, _ROWS_PER_CHUNK))} x {self.dim} "
                f"{'float32' if self.quantization is None else 'int8'}"
            )
        if self.quantization is None:
            if not np.all(np.isfinite(self.vectors())):
                raise MessageError("embeddings hold NaN or infinite values")
        elif not (np.isfinite(self.quantization[0]) and self.quantization[0] > 0):
            raise MessageError(f"embeddings quantization scale {self.quantization[0]} is not "
                               "a positive number")
        if len(self.envelope) != ENVELOPE_FRAMES:
            raise MessageError(f"embeddings envelope has {len(self.envelope)} frames, "
                               f"expected {ENVELOPE_FRAMES}")

    @property
    def _value_bytes(self) -> int:
        return 4 if self.quantization is None else 1

    @property
    def rows(self) -> int:
        return len(self.data) // (self._value_bytes * self.dim)

    @property
    def patch_hop_seconds(self) -> float:
        return CHUNK_HOP_SECONDS / self.rows

    def vectors(self) -> np.ndarray:
        """float32 [rows, dim]."""
        if self.quantization is None:
            return np.frombuffer(self.data, "<f4").reshape(self.rows, self.dim)
        scale, zero_point = self.quantization
        q = np.frombuffer(self.data, np.int8).reshape(self.rows, self.dim)
        return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def levels(self) -> np.ndarray:
        """float [ENVELOPE_FRAMES] dBFS."""
        return np.frombuffer(self.envelope, np.int8).astype(np.float32)


class Prediction(Message):
    """A chunk's top labels (TOP_LABELS of them): per class, the highest score over the chunk's
    patches."""

    TYPE: ClassVar[str] = "prediction"
    VERSION: ClassVar[int] = 1
    TOP_LABELS: ClassVar[int] = 10

    source: str
    session: str
    seq: int
    t: float
    offset: float
    rms: float
    head: str
    labels: list[tuple[str, float]]  # (label, score), highest first
    written_at: float


class Event(Message):
    """A detection: `start` when a label becomes active, `end` (with its end time) when it stops.
    Times are seconds from the start of the source (`start`, `end`) and unix times
    (`start_time`, `end_time`); `end` and `end_time` are None in a start. The field names are
    the events API's and the notifications' (see ../shared/DESIGN.md)."""

    TYPE: ClassVar[str] = "event"
    VERSION: ClassVar[int] = 3
    UPGRADES: ClassVar[dict[int, Callable[[dict], dict]]] = {
        2: lambda obj: {**obj, "categories": []},
    }

    id: str  # source/label/start time in ms: the same for an event's start and end
    source: str
    label: str
    kind: Literal["start", "end"]
    score: float  # peak score so far
    start: float
    end: float | None
    start_time: float
    end_time: float | None
    model: str  # what scored it: "yamnet", or "yamnet/HEAD" for a trained head
    categories: list[str] = []  # the label's AudioSet ancestors,
    # nearest first (Bark: Dog, Domestic animals, pets, Animal); [] for a trained head's own

    def names(self) -> list[str]:
        """What a filter naming a label matches: the label and its categories."""
        return [self.label, *self.categories]

    def check(self) -> None:
        if (self.end is None) != (self.kind == "start") or (self.end_time is None) != (
                self.kind == "start"):
            raise MessageError("an event's end and end_time are set exactly when it ends")



ClipStatus = Literal["ready", "withheld", "dropped", "skipped", "expired"]


class Clip(Message):
    """What became of an event's clip (kept in streams.CLIPS_HASH by the recorder):
    ready: `audio` and `spectrogram` are files under SOUNDHIVE_CLIPS_DIR;
    withheld: privacy (reason "speech"); dropped: its audio was not all there (dropped or
    trimmed upstream, older than the ring); skipped: not written (reason "disk full");
    expired: removed by retention. `reason` says why in one line for all but ready."""

    TYPE: ClassVar[str] = "clip"
    VERSION: ClassVar[int] = 1

    id: str  # the event's
    source: str
    label: str
    status: ClipStatus
    reason: str
    audio: str  # path relative to the clips folder; "" when there is no file
    spectrogram: str
    start: float  # the clip's first sample, seconds from the start of the source
    duration: float  # seconds
    size: int  # bytes of both files
    written: float  # unix time


class Review(Message):
    """A user's verdict on a detection (kept in streams.REVIEWS_HASH)."""

    TYPE: ClassVar[str] = "review"
    VERSION: ClassVar[int] = 1

    id: str  # the event's
    label: str
    verdict: Literal["correct", "wrong"]
    at: float  # unix time


class SourceStatus(Message):
    """What capture says about one of its sources (kept in streams.SOURCES_HASH)."""

    TYPE: ClassVar[str] = "source"
    VERSION: ClassVar[int] = 1

    source: str
    state: str  # "running" | "retrying" | "finished" | "failed" (detail says why)
    detail: str
    rms: float
    seq: int
    updated: float


class SinkStatus(Message):
    """What the notifier says about one of its sinks (kept in streams.SINKS_HASH)."""

    TYPE: ClassVar[str] = "sink"
    VERSION: ClassVar[int] = 1

    sink: str  # "devicehive" | "mqtt" | "webhook" (its first URL) | "webhook-<n>" (its n-th)
    state: str  # "connected" | "connecting" | "retrying" | "failed" | "disabled"
    detail: str  # the last error and "behind: N lost" while behind, one line, never a secret
    last_delivery: float | None  # unix time
    delivered: int
    failed: int  # attempts that failed (and were retried)
    dead_lettered: int  # events given up on
    updated: float
    lost: int = 0  # events the events stream's bound dropped before the sink had them


DEADLETTER_PAYLOAD_MAX = 1024  # bytes of a dead entry kept: enough to see what it was


class DeadLetter(Message):
    """An entry a worker gave up on: the reason, and the first DEADLETTER_PAYLOAD_MAX bytes of
    its payload (its `size` says how long it was; audio chunks are 45 KB each)."""

    TYPE: ClassVar[str] = "deadletter"
    VERSION: ClassVar[int] = 2

    stream: str
    group: str
    entry_id: str
    reason: str
    deliveries: int
    payload: bytes
    size: int
    at: float

    @classmethod
    def now(cls, stream: str, group: str, entry_id: str, reason: str, deliveries: int,
            payload: bytes) -> "DeadLetter":
        return cls(stream, group, entry_id, reason, deliveries,
                   payload[:DEADLETTER_PAYLOAD_MAX], len(payload), time.time())
