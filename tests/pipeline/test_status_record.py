"""status.record on a real Redis, through the batch's one script (shared/writes.py): each
source's level history as an LPUSH, LTRIM and EXPIRE per source in a pipeline leave it (the
newest first, LEVEL_HISTORY kept, the TTL renewed), and every source's latest prediction, in
its shard."""

from pathlib import Path

from redis.cluster import RedisCluster

from shared import status, streams
from shared.messages import Prediction
from shared.writes import Writes
from soundhive.redis_process import LoopbackCluster


def prediction(source: str, n: int) -> Prediction:
    return Prediction(source, "s1", n, 1000.0 + n, n * 0.96, 0.001 * (n + 1), "yamnet",
                      [("Dog", 0.5)], 2000.0 + n / 7)


def reference(pipe, predictions: list[Prediction], shard: streams.Shard) -> None:
    """The three commands per source that record() replaced."""
    pipe.hset(shard.key(streams.LATEST_PREDICTIONS),
              mapping={p.source: p.encode() for p in predictions})
    for source in dict.fromkeys(p.source for p in predictions):
        key = shard.key(streams.source_levels(source))
        pipe.lpush(key, *(f"{p.written_at:.3f} {p.rms:.6g}" for p in predictions
                          if p.source == source))
        pipe.ltrim(key, 0, status.LEVEL_HISTORY - 1)
        pipe.expire(key, status.LEVELS_TTL_S)


def dump(client) -> dict:
    return {key: (client.lrange(key, 0, -1) if client.type(key) == b"list"
                  else client.hgetall(key), client.ttl(key))
            for key in sorted(client.keys("*"))}


def test_levels_and_latest_are_those_of_three_commands_per_source(redis_server):
    client = redis_server.client()
    shard = streams.shards(2)[1]
    # Batches of a few sources, each with one or several chunks, past LEVEL_HISTORY.
    batches = [[prediction(source, n) for n in range(first, first + size)
                for source in ("a", "b b", "c")[:width]]
               for first, size, width in ((0, 1, 1), (1, 3, 3), (4, 150, 2), (154, 90, 3))]
    found = []
    for through_writes in (True, False):
        client.flushall()
        for batch in batches:
            with client.pipeline(transaction=True) as pipe:
                if through_writes:
                    writes = Writes()
                    status.record(writes, batch, shard)
                    writes.queue(pipe)
                else:
                    reference(pipe, batch, shard)
                pipe.execute()
        found.append(dump(client))
    assert found[0] == found[1]
    levels = found[0][shard.key(streams.source_levels("a")).encode()]
    assert len(levels[0]) == status.LEVEL_HISTORY and levels[1] > 0


def test_a_cluster_pipeline_writes_the_levels_too(tmp_path: Path):
    cluster = LoopbackCluster(tmp_path / "cluster")
    cluster.start()
    try:
        client = RedisCluster.from_url(cluster.url)
        shard = streams.shards(6)[2]
        writes = Writes()
        status.record(writes, [prediction("a", 1), prediction("b", 2), prediction("a", 3)],
                      shard)
        with client.pipeline(transaction=True) as pipe:
            writes.queue(pipe)
            pipe.execute()
        key = shard.key(streams.source_levels("a"))
        assert client.lrange(key, 0, -1) == [b"2000.429 0.004", b"2000.143 0.002"]
        assert client.ttl(key) > 0
    finally:
        cluster.stop()
