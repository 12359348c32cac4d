"""Event clips: where the recorder (services/recorder) keeps each event's audio and spectrogram,
the record of what became of them, their URLs and their retention. The api serves them
(services/api/routers/clips.py), the notifier's sinks link them, `embed --from-reviews` reads
the reviewed ones.

    SOUNDHIVE_CLIPS_DIR/<2 hex>/<hash of the event id>.ogg|.flac   the audio
    SOUNDHIVE_CLIPS_DIR/<2 hex>/<hash of the event id>.png         its spectrogram
    streams.CLIPS_HASH                                             event id -> Clip

With several shards (SOUNDHIVE_SHARDS) the records and their retention indexes are global, kept
in shard 0's hash tag (records_shard: written in transactions, they share one slot of a Redis
Cluster); the recorder of any shard writes them there and the api reads them there.

A file name is a function of the event id alone, so replicas and restarts write an event's clip
to the same place (atomically: a temporary file, then a rename). Retention (enforce_retention)
removes ready clips oldest first, past SOUNDHIVE_CLIPS_MAX_AGE_DAYS or while they hold more than
SOUNDHIVE_CLIPS_MAX_GB, but never a label's newest SOUNDHIVE_CLIPS_KEEP_PER_LABEL.
"""

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import redis
from pydantic import Field

from shared import streams
from shared.messages import Clip, Event, MessageError
from shared.streams import Shard

log = logging.getLogger("soundhive.clips")

ClipFormat = Literal["opus", "flac"]
Privacy = Literal["off", "speech"]
EXTENSIONS: dict[str, str] = {"opus": ".ogg", "flac": ".flac"}
MEDIA_TYPES = {".ogg": "audio/ogg", ".flac": "audio/flac", ".png": "image/png"}
SPECTROGRAM_EXTENSION = ".png"
RETENTION_BATCH = 200
RECORDER_CHECK_S = 5.0
PRIVATE_FOLDER = 0o700  # recorded audio: only the services' user reads it
PRIVATE_FILE = 0o600
EXPIRED_REASONS = {"age": "removed by retention: older than SOUNDHIVE_CLIPS_MAX_AGE_DAYS",
                   "size": "removed by retention: over SOUNDHIVE_CLIPS_MAX_GB"}


def clips_dir_field() -> Any:
    return Field(Path("clips"), validation_alias="SOUNDHIVE_CLIPS_DIR",
                 description="Folder of the event clips and spectrograms (the recorder writes "
                 "it, the api reads it: one volume for both; `soundhive up` uses its data "
                 "dir's clips/).")


def privacy_field() -> Any:
    return Field("off", validation_alias="SOUNDHIVE_PRIVACY", description=(
        "speech: no clip is written where Speech (or a kind of speech) scores above "
        "SOUNDHIVE_PRIVACY_THRESHOLD (the event says `withheld`), and `soundhive up` keeps "
        "nothing of its embedded Redis on disk (raw audio passes through it)."))


def public_url_field() -> Any:
    return Field(None, validation_alias="SOUNDHIVE_PUBLIC_URL", description=(
        "The api's address as others reach it (https://soundhive.example): clip links in "
        "notifications are absolute with it, relative without."))


def file_stem(event_id: str) -> str:
    """<2 hex>/<hash>: the files of an event's clip, without extension."""
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:32]
    return f"{digest[:2]}/{digest}"


def clip_urls(event_id: str, base: str | None = None) -> dict[str, str]:
    """The api's URLs of an event's clip and spectrogram, absolute under `base`."""
    path = f"{(base or '').rstrip('/')}/events/{quote(event_id, safe='')}"
    return {"clip": f"{path}/clip", "spectrogram": f"{path}/spectrogram"}


def announced(event: Event, recorder_running: bool, base: str | None = None) -> dict[str, str]:
    """The clip links an event is announced with (the live feed, notifications): an end's
    URLs while a recorder runs. Its clip is written a few seconds later (the post roll and the
    pipeline's delay); until then the URL answers 404, and 410 with the reason where no clip is
    kept (withheld, dropped, expired)."""
    return clip_urls(event.id, base) if recorder_running and event.kind == "end" else {}


def recorder_running(client: redis.Redis) -> bool:
    return bool(client.exists(streams.RECORDER_ALIVE))


class Announcer:
    """announced() for a notifier sink: whether a recorder runs, asked of Redis at most every
    RECORDER_CHECK_S."""

    def __init__(self, client: redis.Redis, base: str | None):
        self.client, self.base = client, base
        self._running, self._checked = False, float("-inf")

    def __call__(self, event: Event) -> dict[str, str]:
        if event.kind == "end" and time.monotonic() - self._checked > RECORDER_CHECK_S:
            self._running, self._checked = recorder_running(self.client), time.monotonic()
        return announced(event, self._running, self.base)


def records_shard(count: int) -> Shard:
    """Where the clip records of a pipeline of `count` shards live (the same keys as with one
    shard when there is one)."""
    return Shard(0, count)


def describe(clip: Clip) -> str:
    """A clip's status as events show it: "ready", "withheld (speech)", ..."""
    return f"{clip.status} ({clip.reason})" if clip.reason else clip.status


def read(client: redis.Redis, event_id: str, shard: Shard = Shard()) -> Clip | None:
    """`shard`: records_shard (here and below)."""
    return _decode(client.hget(shard.key(streams.CLIPS_HASH), event_id))


def read_many(client: redis.Redis, event_ids: list[str], shard: Shard = Shard()
              ) -> dict[str, Clip]:
    if not event_ids:
        return {}
    clips = map(_decode, client.hmget(shard.key(streams.CLIPS_HASH), event_ids))
    return {clip.id: clip for clip in clips if clip is not None}


def _decode(raw: bytes | None) -> Clip | None:
    if raw is None:
        return None
    try:
        return Clip.decode(raw)
    except MessageError:
        return None


def record(client: redis.Redis, clip: Clip, shard: Shard = Shard()) -> None:
    """Store what became of a clip; a ready one joins the retention's indexes."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(shard.key(streams.CLIPS_HASH), clip.id, clip.encode())
        pipe.zadd(shard.key(streams.CLIP_RECORDS_BY_TIME), {clip.id: clip.written})
        if clip.status == "ready":
            pipe.zadd(shard.key(streams.CLIPS_BY_TIME), {clip.id: clip.written})
            pipe.hincrby(shard.key(streams.CLIPS_PER_LABEL), clip.label, 1)
            pipe.incrby(shard.key(streams.CLIPS_BYTES), clip.size)
        pipe.execute()


def record_if_new(pipe: redis.client.Pipeline, clip: Clip, shard: Shard = Shard()) -> None:
    """Store a record without files unless the event has one already."""
    pipe.hsetnx(shard.key(streams.CLIPS_HASH), clip.id, clip.encode())
    pipe.zadd(shard.key(streams.CLIP_RECORDS_BY_TIME), {clip.id: clip.written}, nx=True)


@dataclass(frozen=True)
class Retention:
    folder: Path
    max_age_days: float
    max_bytes: int
    keep_per_label: int


def enforce_retention(client: redis.Redis, policy: Retention, shard: Shard = Shard()
                      ) -> list[tuple[Clip, str]]:
    """Expire ready clips oldest first while they are older than the age limit or hold more
    than the size limit, skipping a label's last keep_per_label; returns the expired, each with
    why (a key of EXPIRED_REASONS). Records without files (withheld, dropped, expired ...) are
    forgotten once older than the age limit."""
    oldest_kept = time.time() - policy.max_age_days * 86400
    expired = _expire_files(client, policy, oldest_kept, shard)
    _forget_records(client, oldest_kept, shard)
    return expired


def _forget_records(client: redis.Redis, oldest_kept: float, shard: Shard) -> None:
    """Forget the records older than oldest_kept that have no files; a ready one leaves this
    index only (CLIPS_BY_TIME has it: it comes back here when it expires)."""
    by_time = shard.key(streams.CLIP_RECORDS_BY_TIME)
    old = [m.decode() for m in client.zrangebyscore(by_time, "-inf", oldest_kept, start=0,
                                                    num=RETENTION_BATCH)]
    if not old:
        return
    records = read_many(client, old, shard)
    with client.pipeline(transaction=True) as pipe:
        pipe.zrem(by_time, *old)
        forgotten = [i for i in old if i not in records or records[i].status != "ready"]
        if forgotten:
            pipe.hdel(shard.key(streams.CLIPS_HASH), *forgotten)
        pipe.execute()


def _expire_files(client: redis.Redis, policy: Retention, oldest_kept: float,
                  shard: Shard) -> list[tuple[Clip, str]]:
    expired: list[tuple[Clip, str]] = []
    start = 0
    while True:
        ids = client.zrange(shard.key(streams.CLIPS_BY_TIME), start,
                            start + RETENTION_BATCH - 1, withscores=True)
        if not ids:
            return expired
        clips = read_many(client, [member.decode() for member, _ in ids], shard)
        for member, written in ids:
            over_size = int(client.get(shard.key(streams.CLIPS_BYTES)) or 0) > policy.max_bytes
            if written >= oldest_kept and not over_size:
                return expired
            clip = clips.get(member.decode())
            if clip is None or _last_of_label(client, clip, policy.keep_per_label, shard):
                start += 1
                continue
            why = "age" if written < oldest_kept else "size"
            _expire(client, policy.folder, clip, why, shard)
            expired.append((clip, why))


def _last_of_label(client: redis.Redis, clip: Clip, keep: int, shard: Shard) -> bool:
    return int(client.hget(shard.key(streams.CLIPS_PER_LABEL), clip.label) or 0) <= keep


def _expire(client: redis.Redis, folder: Path, clip: Clip, why: str, shard: Shard) -> None:
    for name in (clip.audio, clip.spectrogram):
        (folder / name).unlink(missing_ok=True)
    gone = Clip(clip.id, clip.source, clip.label, "expired", EXPIRED_REASONS[why], "", "",
                clip.start, clip.duration, 0, time.time())
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(shard.key(streams.CLIPS_HASH), clip.id, gone.encode())
        pipe.zadd(shard.key(streams.CLIP_RECORDS_BY_TIME), {clip.id: gone.written})
        pipe.zrem(shard.key(streams.CLIPS_BY_TIME), clip.id)
        pipe.hincrby(shard.key(streams.CLIPS_PER_LABEL), clip.label, -1)
        pipe.incrby(shard.key(streams.CLIPS_BYTES), -clip.size)
        pipe.execute()


def write_atomically(path: Path, write: Any) -> int:
    """write(temporary path) then rename it to `path` (a reader never sees half a file);
    returns its size. Recorded audio is private: folders 0700, files 0600 (every service runs
    as one user)."""
    path.parent.mkdir(PRIVATE_FOLDER, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(partial)
        partial.chmod(PRIVATE_FILE)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path.stat().st_size
