"""Recorder service: each detection event -> a clip of what was heard (Ogg Opus or FLAC) and its
spectrogram (PNG), under SOUNDHIVE_CLIPS_DIR, recorded in streams.CLIPS_HASH (shared/clips.py).

Three loops of the shared bus, each with the consumer group `recorder`:
  audio        the audio stream -> each source's ring in Redis (streams.ring_key): its latest
               SOUNDHIVE_CLIPS_RING_S of chunks (4.2 MB per source at the default 90 s), so any
               replica can cut any event's clip and a restart loses nothing. The group holds the
               audio stream's trimming back by at most streams.RECORDER_HOLD_S.
  predictions  (SOUNDHIVE_PRIVACY=speech only) each chunk's speech score -> the source's speech
               ring (streams.speech_key): the highest score of Speech and its kinds among the
               chunk's top labels; with none of them listed, the lowest listed score when the
               list is full (speech may rank just below it: counted as if it did).
  events       each event -> a job (streams.CLIP_JOBS), due once the audio up to its end plus
               the post roll should be in the ring: a start schedules its clip at start + max
               event + post roll (a longer event's clip is its first SOUNDHIVE_CLIPS_MAX_EVENT_S),
               its end brings that forward.
Between reads, the events loop does the due jobs: a job takes a lock (one replica writes a clip),
cuts [start - pre roll, end + post roll] from the ring (ring.py), and records the outcome once:
ready (files written atomically), withheld (speech), dropped (its audio was dropped or trimmed
upstream, or older than the ring: no wrong clip) or skipped (disk full: recording pauses,
counted and logged, while the rest goes on). A job whose audio is late is retried until
JOB_WAIT_S past its span; then whatever is missing counts as dropped. Every RETENTION_EVERY_S one
replica enforces retention (shared/clips.py).
With several shards (SOUNDHIVE_SHARDS) each loop reads its stream in every shard the replica
serves (SOUNDHIVE_SHARD_IDS, or all), in turn (bus.run_in_turn); a source's rings, its events'
jobs and their locks are keys of its shard, and the clip records live where clips.records_shard
says, for every shard.
Metrics and health on SOUNDHIVE_METRICS_PORT (default 9105).
"""

import errno
import functools
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import msgspec
import redis
import soundfile

from services.recorder import ring, spectrogram
from services.recorder.settings import RecorderSettings
from shared import bus, clips, metrics, params, streams
from shared.errors import UserError, one_line
from shared.labels import Ontology
from shared.messages import Clip, ClipStatus, Event, MessageError, PcmChunk, Prediction
from shared.models.catalog import models_dir
from shared.streams import Shard
from shared.topology import Topology

log = logging.getLogger("soundhive.recorder")

JOB_WAIT_S = 60.0  # past the end of a clip's span, its missing audio counts as dropped
JOB_RETRY_S = 1.0
JOB_ERROR_RETRY_S = 15.0
JOBS_PER_TURN = 8
LOCK_S = 60
ALIVE_TTL_S = 30
RETENTION_EVERY_S = 60.0
RETENTION_LOCK = f"{streams.PREFIX}:clips:retention-lock"
SPEECH = "Speech"
SUBTYPES = {"opus": ("OGG", "OPUS"), "flac": ("FLAC", "PCM_16")}



def speech_score(labels: list[tuple[str, float]], speech_names: frozenset[str] | set[str]
                 ) -> float:
    """A chunk's speech score from its top labels: the highest of Speech and its kinds; when
    none is listed and the list is full (Prediction.TOP_LABELS), the lowest listed score, an upper
    bound of what speech may have scored below the cut."""
    listed = [score for label, score in labels if label in speech_names]
    if listed:
        return max(listed)
    return min((score for _, score in labels), default=0.0) \
        if len(labels) >= Prediction.TOP_LABELS else 0.0

class Recorder:
    """The recorder's Redis side and files; its handlers run in the bus's loops."""

    def __init__(self, settings: RecorderSettings, topology: Topology):
        self.settings, self.topology = settings, topology
        self.records_shard = clips.records_shard(topology.count)
        self.records = topology.client(self.records_shard)
        self.folder = settings.clips_dir
        self.ring_chunks = int(settings.clips_ring_s / ring.CHUNK_HOP_SECONDS) + 1
        # A source that stops leaves no audio in Redis for long: its ring goes once its last
        # events' jobs are done with it.
        self.ring_ttl_s = int(settings.clips_ring_s + 2 * JOB_WAIT_S)
        self.speech_names = speech_names() if settings.privacy == "speech" else frozenset()
        self.paused_for: str | None = None
        self._next_alive = self._next_retention = 0.0
        metrics.start_at_zero(metrics.CLIPS, get_args(ClipStatus))
        metrics.start_at_zero(metrics.CLIPS_EXPIRED, list(clips.EXPIRED_REASONS))

    def keep_audio(self, shard: Shard, batch: list[bus.Delivery[PcmChunk]]) -> int:
        with self.topology.client(shard).pipeline(transaction=False) as pipe:
            for delivery in batch:
                key = shard.key(streams.ring_key(delivery.message.source))
                pipe.rpush(key, delivery.message.encode())
                pipe.ltrim(key, -self.ring_chunks, -1)
                pipe.expire(key, self.ring_ttl_s)
            pipe.execute()
        return 0

    def keep_speech(self, shard: Shard, batch: list[bus.Delivery[Prediction]]) -> int:
        with self.topology.client(shard).pipeline(transaction=False) as pipe:
            for delivery in batch:
                p = delivery.message
                score = speech_score(p.labels, self.speech_names)
                key = shard.key(streams.speech_key(p.source))
                pipe.rpush(key, msgspec.msgpack.encode([p.session, p.seq, score]))
                pipe.ltrim(key, -self.ring_chunks, -1)
                pipe.expire(key, self.ring_ttl_s)
            pipe.execute()
        return 0

    def plan(self, shard: Shard, batch: list[bus.Delivery[Event]]) -> int:
        """Each event's job: a start's only if its event has none yet, an end's always. An
        event whose audio is older than the ring (the events stream's history, read by a
        recorder started after it) is recorded as dropped at once, unless it has a record."""
        events = [delivery.message for delivery in batch]
        stale = [e for e in events
                 if time.time() - self._span_end(e) > self.settings.clips_ring_s]
        if stale:
            with self.records.pipeline(transaction=True) as pipe:
                for event in stale:
                    clips.record_if_new(pipe, self._outcome(event, "dropped", (
                        f"older than the ring ({self.settings.clips_ring_s:g} s) when the "
                        "recorder read it")), self.records_shard)
                metrics.CLIPS.labels("dropped").inc(sum(pipe.execute()[::2]))
        jobs, job_events = shard.key(streams.CLIP_JOBS), shard.key(streams.CLIP_JOB_EVENTS)
        with self.topology.client(shard).pipeline(transaction=True) as pipe:
            for event in (e for e in events if e not in stale):
                if event.kind == "start":
                    pipe.hsetnx(job_events, event.id, event.encode())
                    pipe.zadd(jobs, {event.id: self._span_end(event)}, nx=True)
                else:
                    pipe.hset(job_events, event.id, event.encode())
                    pipe.zadd(jobs, {event.id: self._span_end(event)})
            pipe.execute()
        return 0

    def tick(self, shard: Shard) -> None:
        """The shard's due jobs; the recorder's sign of life and retention when due."""
        client = self.topology.client(shard)
        for member in client.zrangebyscore(shard.key(streams.CLIP_JOBS), "-inf", time.time(),
                                           start=0, num=JOBS_PER_TURN):
            event_id = member.decode()
            lock = shard.key(streams.clip_lock(event_id))
            if client.set(lock, self.settings.consumer, nx=True, ex=LOCK_S):
                try:
                    self._job(shard, event_id)
                finally:
                    client.delete(lock)
        if time.monotonic() >= self._next_alive:
            self._next_alive = time.monotonic() + ALIVE_TTL_S / 3
            self.topology.home.set(streams.RECORDER_ALIVE, self.settings.consumer,
                                   ex=ALIVE_TTL_S)
        if time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + RETENTION_EVERY_S
            self._retention()

    def _retention(self) -> None:
        if self.topology.home.set(RETENTION_LOCK, self.settings.consumer, nx=True,
                                  ex=int(RETENTION_EVERY_S)):
            policy = clips.Retention(self.folder, self.settings.clips_max_age_days,
                                     int(self.settings.clips_max_gb * 1e9),
                                     self.settings.clips_keep_per_label)
            for _, why in clips.enforce_retention(self.records, policy, self.records_shard):
                metrics.CLIPS_EXPIRED.labels(why).inc()

    def _job(self, shard: Shard, event_id: str) -> None:
        client = self.topology.client(shard)
        event = _event(client.hget(shard.key(streams.CLIP_JOB_EVENTS), event_id))
        if event is None or clips.read(self.records, event_id, self.records_shard) is not None:
            self._finish(shard, event_id)
            return
        try:
            clip = self._make(shard, event)
        except Exception as exc:  # a bug or the disk: report, retry later, give up past the wait
            if isinstance(exc, redis.RedisError):
                raise
            log.warning("recorder: the clip of %s failed: %s", event_id, one_line(exc))
            if time.time() < self._span_end(event) + JOB_WAIT_S:
                client.zadd(shard.key(streams.CLIP_JOBS),
                            {event_id: time.time() + JOB_ERROR_RETRY_S})
                return
            clip = self._outcome(event, "skipped", f"not written: {one_line(exc)}")
        if clip is None:
            client.zadd(shard.key(streams.CLIP_JOBS), {event_id: time.time() + JOB_RETRY_S})
            return
        clips.record(self.records, clip, self.records_shard)
        metrics.CLIPS.labels(clip.status).inc()
        self._finish(shard, event_id)

    def _finish(self, shard: Shard, event_id: str) -> None:
        with self.topology.client(shard).pipeline(transaction=True) as pipe:
            pipe.zrem(shard.key(streams.CLIP_JOBS), event_id)
            pipe.hdel(shard.key(streams.CLIP_JOB_EVENTS), event_id)
            pipe.execute()

    def _make(self, shard: Shard, event: Event) -> Clip | None:
        """The event's clip, written, or why not; None while its audio (or, in privacy mode,
        its speech scores) are not all in yet."""
        late = time.time() > self._span_end(event) + JOB_WAIT_S
        lo, hi = self._span(event)
        client = self.topology.client(shard)
        chunks = [PcmChunk.decode(raw) for raw in
                  client.lrange(shard.key(streams.ring_key(event.source)), 0, -1)]
        try:
            audio = ring.cut(chunks, event, lo, hi)
        except ring.Gap as gap:
            return self._outcome(event, "dropped", str(gap))
        if audio is None:
            return self._outcome(event, "dropped", "the audio after it never arrived") \
                if late else None
        if self.speech_names:
            speech = self._speech(shard, event.source, audio)
            if speech is None:
                return self._outcome(event, "withheld", "speech (not known: no prediction)") \
                    if late else None
            if speech >= self.settings.privacy_threshold:
                return self._outcome(event, "withheld", "speech", audio)
        return self._write(event, audio)

    def _speech(self, shard: Shard, source: str, audio: ring.Cut) -> float | None:
        """The highest speech score of the clip's chunks; None while one is not known."""
        scores = {}
        client = self.topology.client(shard)
        for raw in client.lrange(shard.key(streams.speech_key(source)), 0, -1):
            session, seq, score = msgspec.msgpack.decode(raw)
            if session == audio.session:
                scores[seq] = score
        if not all(seq in scores for seq in audio.seqs):
            return None
        return max(scores[seq] for seq in audio.seqs)

    def _write(self, event: Event, audio: ring.Cut) -> Clip:
        if (reason := self._disk_full()) is not None:
            return self._pause(event, audio, reason)
        stem = clips.file_stem(event.id)
        name = stem + clips.EXTENSIONS[self.settings.clips_format]
        image = stem + clips.SPECTROGRAM_EXTENSION
        file_format, subtype = SUBTYPES[self.settings.clips_format]
        into = event.start - audio.start
        marks = (into, into + (event.end - event.start if event.end is not None
                               else self.settings.clips_max_event_s))
        try:
            size = clips.write_atomically(self.folder / name, lambda path: soundfile.write(
                path, audio.samples, params.SAMPLE_RATE, subtype, format=file_format))
            size += clips.write_atomically(self.folder / image, lambda path: spectrogram.render(
                audio.samples, path, f"{event.label} — {event.source}", marks))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return self._pause(event, audio, "disk full (no space left on device)")
        self._resume()
        return Clip(event.id, event.source, event.label, "ready", "", name, image, audio.start,
                    _seconds(audio), size, time.time())

    def _disk_full(self) -> str | None:
        self.folder.mkdir(clips.PRIVATE_FOLDER, parents=True, exist_ok=True)
        free = shutil.disk_usage(self.folder).free
        if free < self.settings.clips_min_free_mb * 2**20:
            return f"disk full ({free / 2**20:.0f} MB free, SOUNDHIVE_CLIPS_MIN_FREE_MB is " \
                   f"{self.settings.clips_min_free_mb})"
        return None

    def _pause(self, event: Event, audio: ring.Cut, reason: str) -> Clip:
        if self.paused_for is None:
            log.error("recorder: recording paused: %s in %s; events go on without clips",
                      reason, self.folder)
            metrics.RECORDING_PAUSED.set(1)
        self.paused_for = reason
        return self._outcome(event, "skipped", reason, audio)

    def _resume(self) -> None:
        if self.paused_for is not None:
            log.info("recorder: recording resumed (%s is over)", self.paused_for)
            metrics.RECORDING_PAUSED.set(0)
        self.paused_for = None

    def _outcome(self, event: Event, status: ClipStatus, reason: str,
                 audio: ring.Cut | None = None) -> Clip:
        """A clip record without files: why there is none."""
        return Clip(event.id, event.source, event.label, status, reason, "", "",
                    audio.start if audio else 0.0, _seconds(audio) if audio else 0.0, 0,
                    time.time())

    def _span(self, event: Event) -> tuple[float, float]:
        """Seconds from the source's start: pre roll before the start to post roll after the
        end, or after start + max event while it goes on or if it is longer."""
        end = event.start + self.settings.clips_max_event_s
        if event.end is not None:
            end = min(end, event.end)
        return event.start - self.settings.clips_pre_roll_s, end + self.settings.clips_post_roll_s

    def _span_end(self, event: Event) -> float:
        """Unix time when the audio of the clip's span has all been captured."""
        end = event.start_time + self.settings.clips_max_event_s
        if event.end_time is not None:
            end = min(end, event.end_time)
        return end + self.settings.clips_post_roll_s


def _seconds(audio: ring.Cut) -> float:
    return round(len(audio.samples) / params.SAMPLE_RATE, 3)


def _event(raw: bytes | None) -> Event | None:
    if raw is None:
        return None
    try:
        return Event.decode(raw)
    except MessageError:
        return None


def speech_names() -> frozenset[str]:
    """Speech and the names of its kinds in the AudioSet ontology of the models folder."""
    path = models_dir() / "ontology.json"
    if not path.is_file():
        raise UserError(f"SOUNDHIVE_PRIVACY=speech needs the AudioSet ontology ({path}) to know "
                        "the kinds of speech: run `soundhive models pull`")
    return frozenset({SPEECH, *Ontology.from_json(path).more_specific_names(SPEECH)})


def _loop(settings: RecorderSettings, part: str) -> RecorderSettings:
    """The settings of one of the recorder's loops: its metrics say which."""
    return settings.model_copy(update={"service": f"recorder:{part}"})


def main(settings: RecorderSettings) -> None:
    """Until SIGTERM/SIGINT."""
    topology = Topology.connect(settings, settings.block_ms)
    recorder = Recorder(settings, topology)
    settings.clips_dir.mkdir(clips.PRIVATE_FOLDER, parents=True, exist_ok=True)
    health = metrics.Health()
    stopper = bus.Stopper()
    server = metrics.serve(settings.metrics_port, health, settings.metrics_host)

    def workers(part: str, stream: str, schema: type, handle: Callable, tick: bool = False
                ) -> list[bus.Worker]:
        """The loop's worker of each shard served."""
        return [bus.Worker(_loop(settings, part), stream, streams.RECORDER_GROUP, schema,
                           functools.partial(handle, shard), health, stopper,
                           topology.client(shard), shard=shard,
                           tick=functools.partial(recorder.tick, shard) if tick else None)
                for shard in topology.served]

    loops = [workers("audio", streams.PCM_STREAM, PcmChunk, recorder.keep_audio)]
    if recorder.speech_names:
        loops.append(workers("speech", streams.PREDICTIONS_STREAM, Prediction,
                             recorder.keep_speech))
    threads = [threading.Thread(target=bus.run_in_turn, args=(loop,), name=loop[0].name,
                                daemon=True) for loop in loops]
    for thread in threads:
        health.watch(thread.is_alive, f"the recorder's {thread.name} loop died")
        thread.start()
    log.info("recorder: clips in %s (%s, privacy %s), %s served, metrics on :%d",
             Path(settings.clips_dir), settings.clips_format, settings.privacy,
             ", ".join(map(str, topology.served)), server.server_port)
    bus.run_in_turn(workers("events", streams.EVENTS_STREAM, Event, recorder.plan, tick=True),
                    topology.prepare_to_write)  # its acknowledgements go through the script
    for thread in threads:
        thread.join(10)
    topology.close()
