"""Every Redis key the pipeline uses — streams, consumer groups, state keys — defined once.

Flow:  capture --PCM_STREAM--> features --EMBEDDINGS_STREAM--> classifier --PREDICTIONS_STREAM
                                                                          \\-> EVENTS_STREAM
                                                                           \\-> EVENTS_HISTORY
Every stream entry holds one field, MESSAGE_FIELD, whose value is a msgpack message
(see shared/messages.py). Entries a worker cannot use go to DEADLETTER_STREAM.
"""

PREFIX = "soundhive"

PCM_STREAM = f"{PREFIX}:pcm"
EMBEDDINGS_STREAM = f"{PREFIX}:embeddings"
PREDICTIONS_STREAM = f"{PREFIX}:predictions"
EVENTS_STREAM = f"{PREFIX}:events"
DEADLETTER_STREAM = f"{PREFIX}:deadletter"

# A capped list (newest first) of the last EVENTS_HISTORY_SIZE events, for the API.
EVENTS_HISTORY = f"{PREFIX}:events:history"
EVENTS_HISTORY_SIZE = 1000

# Consumer groups: replicas of one service share its group, so each entry goes to one of them.
FEATURES_GROUP = "features"
CLASSIFIER_GROUP = "classifier"

# Hash: source id -> msgpack SourceStatus (capture keeps it current; `soundhive up` shows it).
SOURCES_HASH = f"{PREFIX}:sources"

MESSAGE_FIELD = b"m"


def errors_hash(group: str) -> str:
    """Hash: entry id -> last processing error, so the dead letter can say why."""
    return f"{PREFIX}:errors:{group}"


def done_key(source: str, session: str, seq: int) -> str:
    """Set once the classifier wrote the outputs of a chunk: the idempotency key."""
    return f"{PREFIX}:done:{source}:{session}:{seq}"


def window_key(source: str) -> str:
    """Sorted set of a source's recent embeddings, scored by patch index (window heads)."""
    return f"{PREFIX}:window:{source}"


def event_state_key(source: str) -> str:
    """A source's open events (msgpack), shared by all classifier replicas."""
    return f"{PREFIX}:eventstate:{source}"
