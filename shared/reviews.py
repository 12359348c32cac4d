"""Reviews: a user's verdict on a detection, correct or wrong (streams.REVIEWS_HASH, event id ->
Review). The api writes them; the events show them; `soundhive embed --from-reviews` turns the
reviewed clips into training data (a wrong one: a negative of its label)."""

from collections import Counter
from pathlib import Path

import redis

from shared import clips, streams
from shared.messages import Event, MessageError, Review
from shared.topology import Topology


def write(client: redis.Redis, event: Event, verdict: str, at: float) -> Review:
    review = Review(event.id, event.label, verdict, at)  # type: ignore[arg-type]
    client.hset(streams.REVIEWS_HASH, event.id, review.encode())
    return review


def read_all(client: redis.Redis) -> list[Review]:
    found = []
    for raw in client.hvals(streams.REVIEWS_HASH):
        try:
            found.append(Review.decode(raw))
        except MessageError:
            continue
    return found


def kept_clips(topology: Topology, root: Path) -> list[tuple[Review, Path]]:
    """The reviews whose event's clip is ready and still under `root`, with its audio file.
    The clip records are where the pipeline's recorded shard count puts them, on its one
    Redis, servers or cluster (the topology's)."""
    reviewed = read_all(topology.home)
    records = clips.records_shard(int(topology.home.get(streams.SHARD_COUNT) or 1))
    kept = clips.read_many(topology.client(records), [review.id for review in reviewed],
                           records)
    return [(review, root / clip.audio) for review in reviewed
            if (clip := kept.get(review.id)) is not None and clip.status == "ready"
            and (root / clip.audio).is_file()]


def verdicts(client: redis.Redis, event_ids: list[str]) -> dict[str, str]:
    """event id -> its verdict, for those reviewed."""
    if not event_ids:
        return {}
    found = {}
    for event_id, raw in zip(event_ids, client.hmget(streams.REVIEWS_HASH, event_ids),
                             strict=True):
        try:
            if raw is not None:
                found[event_id] = Review.decode(raw).verdict
        except MessageError:
            continue
    return found


def counts(client: redis.Redis) -> dict[str, dict[str, int]]:
    """{"correct": {label: n}, "wrong": {label: n}}."""
    tally: dict[str, Counter[str]] = {"correct": Counter(), "wrong": Counter()}
    for review in read_all(client):
        tally[review.verdict][review.label] += 1
    return {verdict: dict(counter) for verdict, counter in tally.items()}
