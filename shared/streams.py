"""Every Redis key the pipeline uses — streams, consumer groups, state keys — defined once.

Flow:  capture --PCM_STREAM--> features --EMBEDDINGS_STREAM--> classifier --PREDICTIONS_STREAM
                                                                          \\-> EVENTS_STREAM
                                                                           \\-> DETECTIONS_*
Every stream entry holds one field, MESSAGE_FIELD, whose value is a msgpack message
(see shared/messages.py). Entries a worker cannot use go to DEADLETTER_STREAM.
Streams read by a consumer group (CONSUMER_GROUPS) are trimmed only of acknowledged entries
(shared/bus.py); EVENTS_STREAM is a history (SOUNDHIVE_EVENTS_MAXLEN) that keeps what the
notifier's sinks have not had, within a bound (SOUNDHIVE_EVENTS_BACKLOG_MAX); the others are
histories capped at SOUNDHIVE_STREAM_MAXLEN.

Shards (SOUNDHIVE_SHARDS = S): the names below are those of shard 0 of 1, today's keys. With
S > 1 every key a source's chunks touch on their way (the pipeline's streams, the dead letters,
the classifier's per-source state, the predictions, events and detections it writes in one
transaction, and their indexes) exists once per shard, its name ending in the shard's hash tag
`{sN}` (Shard.key): on a Redis Cluster a shard's keys share one slot, so its transactions and
Lua scripts stay on one node. A source's shard is `shard_of(source, S)`: the first 8 bytes of
the BLAKE2b hash of its id, modulo S: stable across processes, machines and versions (never
Python's salted hash()), and well spread even for ids that differ in one character (CRC-32 is
linear: "mix0.wav" to "mix7.wav" all fall in shard 0 of 4). The keys that
are not per source (SOURCES_HASH, SINKS_HASH, HEAD_INFO, DEVICEHIVE_CONFIG, SHARD_COUNT, the
MQTT sink's, RECORDER_ALIVE, REVIEWS_HASH) are global: one each, only ever written alone. The
recorder keeps a source's rings, its events' clip jobs and their locks in the source's shard;
the clip records and their retention indexes, written together, live in shard 0
(shared/clips.py: records_shard). Readers of a stream (the api, the
notifier, a recorder) get each shard's name with `every_shard(name, S)` (or `shards(S)` and
`Shard.key`).
"""

import hashlib
from dataclasses import dataclass

PREFIX = "soundhive"

PCM_STREAM = f"{PREFIX}:pcm"
EMBEDDINGS_STREAM = f"{PREFIX}:embeddings"
PREDICTIONS_STREAM = f"{PREFIX}:predictions"
EVENTS_STREAM = f"{PREFIX}:events"
DEADLETTER_STREAM = f"{PREFIX}:deadletter"

# Detections (shared/detections.py): event id -> latest Event (its start, then its end), and the
# ids by start time; the events API pages through them.
DETECTIONS_HASH = f"{PREFIX}:detections"
DETECTIONS_INDEX = f"{PREFIX}:detections:by-start"
# Sorted set: the ids of the detections still going on (a start without its end), by start time.
DETECTIONS_ONGOING = f"{PREFIX}:detections:ongoing"
# Hash: source id -> the id of its detection with the latest start.
DETECTIONS_LATEST = f"{PREFIX}:detections:latest"


def detections_by_source(source: str) -> str:
    return f"{DETECTIONS_INDEX}:source:{source}"


def detections_by_label(label: str) -> str:
    return f"{DETECTIONS_INDEX}:label:{label}"


# Hash: source id -> its latest Prediction (current top labels for the api and `up`).
LATEST_PREDICTIONS = f"{PREFIX}:latest"

# String: JSON of the classifier's head in service (head, model, labels, event rules).
HEAD_INFO = f"{PREFIX}:head"

# Consumer groups: replicas of one service share its group, so each entry goes to one of them.
FEATURES_GROUP = "features"
CLASSIFIER_GROUP = "classifier"
# The notifier reads EVENTS_STREAM (a history: never trimmed by its readers) with one group per
# sink, "notifier:<sink>", so a sink that is down falls behind alone and keeps its place.
NOTIFIER_GROUP = "notifier"

# Hash: notifier group -> events the events stream's bound dropped before the group was
# delivered them, not yet counted by the sink (which takes the count: bus.trim_history).
EVENTS_LOST = f"{PREFIX}:events:lost"

# The recorder (services/recorder) reads the audio stream with its own group, copying each chunk
# into its source's ring; it holds the stream's trimming back by at most RECORDER_HOLD_S of
# entries (bus.trim_acknowledged), so a stopped recorder never keeps audio in Redis for long. It
# reads the events stream (a clip per event) and, with SOUNDHIVE_PRIVACY=speech, the predictions
# stream (each chunk's speech score) with the same group name.
RECORDER_GROUP = "recorder"
RECORDER_HOLD_S = 60.0

# Clips (shared/clips.py): event id -> msgpack Clip (what became of its clip), every record by
# when it was written (one without files is forgotten past the age limit), the ready ones by
# when they were written (retention goes oldest first), their count per label and total bytes.
CLIPS_HASH = f"{PREFIX}:clips"
CLIP_RECORDS_BY_TIME = f"{PREFIX}:clips:records-by-time"
CLIPS_BY_TIME = f"{PREFIX}:clips:by-time"
CLIPS_PER_LABEL = f"{PREFIX}:clips:per-label"
CLIPS_BYTES = f"{PREFIX}:clips:bytes"
# The recorder's jobs: sorted set of event ids by when their audio should all be in the ring,
# and hash: event id -> the latest Event of each (its start, replaced by its end).
CLIP_JOBS = f"{PREFIX}:clips:jobs"
CLIP_JOB_EVENTS = f"{PREFIX}:clips:job-events"
# String with a short expiry: set while a recorder runs (sinks link clips only then).
RECORDER_ALIVE = f"{PREFIX}:recorder:alive"

# Hash: event id -> msgpack Review (a user's verdict on a detection).
REVIEWS_HASH = f"{PREFIX}:reviews"

# The group that consumes each pipeline stream (its backlog bounds the stream's producer).
CONSUMER_GROUPS = {PCM_STREAM: FEATURES_GROUP, EMBEDDINGS_STREAM: CLASSIFIER_GROUP}

# Every stream read through consumer groups (the api exports each group's lag and pending).
GROUP_STREAMS = (*CONSUMER_GROUPS, EVENTS_STREAM)

# Hash: source id -> msgpack SourceStatus (capture keeps it current; `soundhive up` shows it).
SOURCES_HASH = f"{PREFIX}:sources"

# Hash: notifier sink name (devicehive, mqtt, webhook) -> msgpack SinkStatus (the notifier keeps
# it current; the api and the dashboard show it).
SINKS_HASH = f"{PREFIX}:sinks"

# Hash: the DeviceHive settings stored by the dashboard's form (url, device_id, notification,
# refresh_token, access_token); the notifier applies them without a restart. With a URL they
# replace the SOUNDHIVE_DEVICEHIVE_* environment's configuration as a whole (the environment's
# credentials never go to a stored URL); the api never shows a token back.
DEVICEHIVE_CONFIG = f"{PREFIX}:config:devicehive"

# String: a random token the classifier writes where there is none. It goes only with all of
# Redis's data (FLUSHALL, a restart without persistence): its change says the data was lost.
EPOCH = f"{PREFIX}:epoch"

# Sorted set: source id -> unix time since which its sequence waits for a missing chunk.
REORDER_GAPS = f"{PREFIX}:reorder:gaps"

# String: the shard count the data was written with (SOUNDHIVE_SHARDS), set by the first
# process that starts; a process configured with another count refuses to start.
SHARD_COUNT = f"{PREFIX}:shards"

MESSAGE_FIELD = b"m"


def shard_of(source: str, count: int) -> int:
    """The shard of a source among `count`: its UTF-8 id's BLAKE2b (8 bytes), modulo the
    count."""
    digest = hashlib.blake2b(source.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True)
class Shard:
    """One of `count` shards; its keys are the module's names with its hash tag."""

    index: int = 0
    count: int = 1

    def key(self, name: str) -> str:
        """`name` in this shard: the name itself when there is one shard (today's keys)."""
        return name if self.count == 1 else f"{name}:{{s{self.index}}}"

    def __str__(self) -> str:
        return f"shard {self.index} of {self.count}"


def shards(count: int) -> list[Shard]:
    """Every shard of `count`, in order."""
    return [Shard(index, count) for index in range(count)]


def shard_for(source: str, count: int) -> Shard:
    return Shard(shard_of(source, count), count)


def every_shard(name: str, count: int) -> list[str]:
    """A stream's (or key's) name in every shard, in shard order: what a reader of "the audio
    stream" or "the events stream" reads (a client per name: shared/topology.py)."""
    return [shard.key(name) for shard in shards(count)]


def errors_hash(group: str) -> str:
    """Hash: entry id -> last processing error, so the dead letter can say why."""
    return f"{PREFIX}:errors:{group}"


def source_state_key(source: str) -> str:
    """A source's sequence state in the classifier (msgpack: session, next sequence number,
    open events, recent embeddings), shared by all classifier replicas."""
    return f"{PREFIX}:state:{source}"


def source_levels(source: str) -> str:
    """List: a source's recent levels, newest first, "unix-time rms" each (shared/status.py)."""
    return f"{PREFIX}:levels:{source}"


def reorder_key(source: str) -> str:
    """Hash: sequence number -> embeddings message of a source's chunks that arrived early."""
    return f"{PREFIX}:reorder:{source}"


def mqtt_published(instance: str) -> str:
    """Hash: JSON [source, label] -> the state the MQTT sink of `instance` retains for it
    (label "": the source's own topics), so a later start can clear what it no longer has."""
    return f"{PREFIX}:mqtt:{instance}:published"


def ring_key(source: str) -> str:
    """List: a source's most recent PCM chunks (msgpack PcmChunk), oldest first, capped at the
    recorder's ring."""
    return f"{PREFIX}:ring:{source}"


def speech_key(source: str) -> str:
    """List: [session, seq, speech score] of a source's recent predictions (privacy mode)."""
    return f"{PREFIX}:ring:speech:{source}"


def clip_lock(event_id: str) -> str:
    """String: the recorder replica writing this event's clip (expires)."""
    return f"{PREFIX}:clips:lock:{event_id}"


def notifier_group(sink: str) -> str:
    """The consumer group of one notifier sink on EVENTS_STREAM."""
    return f"{NOTIFIER_GROUP}:{sink}"
