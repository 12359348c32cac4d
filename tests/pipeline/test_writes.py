"""shared/writes.py on a real Redis: a transaction's writes sent as one script leave what the
same commands sent one by one leave; out of memory, a key outside the ACL user's patterns, keys
of two cluster slots or a watched key's change abort the whole transaction, nothing written; a
command failing while the script runs leaves the batch's acknowledgement (the last write)
undone; a cluster pipeline routes it to its shard's node; a Redis that cannot run it is named
at start."""

from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from shared import bus, streams, writes
from shared.config import ConfigError, Settings
from shared.topology import Topology
from shared.writes import Writes
from soundhive.redis_process import LoopbackCluster

COMMANDS = [
    ("XADD", "out", "MAXLEN", "~", 5, "*", b"m", b"\x00\xffbinary"),
    ("XADD", "events", "*", b"m", b"one"),
    ("HSET", "details", "a", b"1", "b", b"2"),
    ("HDEL", "details", "b"),
    ("ZADD", "index", 1000.25, "a"),
    ("ZADD", "index", 999.5, "b"),
    ("ZREM", "index", "b"),
    ("SET", "state", b"\x81\xa1s\x01", "EX", 60),
    ("HSET", "parked", 7, b"x"),
    ("EXPIRE", "parked", 60),
    ("DEL", "gone"),
]


def value(client: redis.Redis, key: bytes) -> object:
    kind = client.type(key)
    if kind == b"stream":
        return [fields for _, fields in client.xrange(key)]  # the ids are the time's
    if kind == b"hash":
        return client.hgetall(key)
    if kind == b"zset":
        return client.zrange(key, 0, -1, withscores=True)
    return client.get(key)


def dump(client: redis.Redis) -> dict:
    return {key: (value(client, key), client.ttl(key) > 0) for key in sorted(client.keys("*"))}


def test_one_script_writes_what_the_commands_write(redis_server):
    client = redis_server.client()
    found = []
    for one_by_one in (False, True):
        client.flushall()
        client.set("gone", 1)
        with client.pipeline(transaction=True) as pipe:
            writes = Writes()
            for command in COMMANDS:
                if one_by_one:
                    pipe.execute_command(*command)
                else:
                    writes.add(*command)
            writes.queue(pipe)
            pipe.execute()
        found.append(dump(client))
    assert found[0] == found[1]
    assert found[0][b"state"] == (b"\x81\xa1s\x01", True)


def test_out_of_memory_aborts_the_whole_transaction(redis_server):
    client = redis_server.client()
    client.set("before", b"x" * 100_000)
    client.config_set("maxmemory", 1)
    writes = Writes()
    for command in COMMANDS:
        writes.add(*command)
    with (pytest.raises(redis.ResponseError, match=r"# 1 \(EVAL .*maxmemory"),
          client.pipeline(transaction=True) as pipe):
        writes.queue(pipe)  # refused as it is queued: its script would write
        pipe.get("before")
        pipe.execute()
    client.config_set("maxmemory", 0)
    assert client.keys("*") == [b"before"]


def test_a_watched_change_aborts_it(redis_server):
    client = redis_server.client()
    writes = Writes()
    writes.add("SET", "state", b"mine")
    with client.pipeline(transaction=True) as pipe:
        pipe.watch("state")
        client.set("state", b"theirs")  # another replica
        pipe.multi()
        writes.queue(pipe)
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert client.get("state") == b"theirs"


def test_a_cluster_pipeline_sends_it_to_its_shards_node(tmp_path: Path):
    cluster = LoopbackCluster(tmp_path / "cluster")
    cluster.start()
    try:
        client = RedisCluster.from_url(cluster.url)
        for shard in streams.shards(6):
            writes = Writes()
            writes.add("SET", shard.key("state"), str(shard.index))
            writes.add("ZADD", shard.key("index"), shard.index, "a")
            with client.pipeline(transaction=True) as pipe:
                writes.queue(pipe)
                pipe.execute()
        for shard in streams.shards(6):
            assert client.get(shard.key("state")) == str(shard.index).encode()
            assert client.zscore(shard.key("index"), "a") == shard.index
        writes = Writes()
        writes.add("SET", "soundhive:untagged", 1)  # not in shard 0's slot
        writes.add("SET", streams.shards(6)[0].key("other"), 1)
        with pytest.raises(RedisClusterException, match="same key slot"), \
                client.pipeline(transaction=True) as pipe:
            writes.queue(pipe)
            pipe.execute()
        assert client.get(streams.shards(6)[0].key("other")) is None
        with pytest.raises(ConfigError, match="SOUNDHIVE_SHARDS of 2 or more"):
            Topology.connect(Settings(redis_url=cluster.url, redis_cluster=True)
                             ).prepare_to_write()
    finally:
        cluster.stop()


def test_a_redis_that_cannot_run_the_script_is_named_at_start(redis_server, monkeypatch):
    """Redis 6 has no shebang in scripts: a compile error, refused once at start in one line
    (a service exits 2 on it), not met by every batch until it is dead-lettered."""
    topology = Topology.connect(Settings(redis_url=redis_server.url))
    topology.prepare_to_write()  # this Redis 7 runs it
    monkeypatch.setattr(writes, "_APPLY", "#!lua\nthis is not Lua\n")
    with pytest.raises(ConfigError, match=r"^REDIS_URL: .*Redis 7 or later.*compiling") as caught:
        topology.prepare_to_write()
    assert "\n" not in str(caught.value)


def test_out_of_memory_at_start_is_waited_out_not_refused(redis_server, monkeypatch):
    topology = Topology.connect(Settings(redis_url=redis_server.url))
    topology.claim_shard_count()
    monkeypatch.setattr(Topology, "claim_shard_count", lambda self: None)  # the script's turn
    client = redis_server.client()
    client.set("before", b"x" * 100_000)
    client.config_set("maxmemory", 1)
    try:
        with pytest.raises(redis.ResponseError) as caught:
            topology.prepare_to_write()
        assert not isinstance(caught.value, ConfigError)
        assert bus.weather(caught.value) == "out of memory"
    finally:
        client.config_set("maxmemory", 0)


def pending_batch(client: redis.Redis) -> bus.Acknowledgement:
    """A batch of one entry delivered to a consumer and not yet acknowledged."""
    client.xadd("in", {"m": b"x"})
    client.xgroup_create("in", "g", id="0")
    [[_, [(entry_id, _)]]] = client.xreadgroup("g", "c", {"in": ">"})
    return bus.Acknowledgement("in", "g", "errors", (entry_id.decode(),), False)


def test_a_command_failing_in_the_script_leaves_the_batch_pending(redis_server):
    client = redis_server.client()
    acknowledgement = pending_batch(client)
    client.set("index", b"not a sorted set")
    writes = Writes()
    writes.add("XADD", "out", "*", b"m", b"1")
    writes.add("ZADD", "index", 1.0, "a")  # WRONGTYPE, as the script runs
    writes.add("XADD", "out", "*", b"m", b"2")
    acknowledgement.add_to(writes)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"), \
            client.pipeline(transaction=True) as pipe:
        writes.queue(pipe)
        pipe.execute()
    assert client.xpending("in", "g")["pending"] == 1  # delivered again
    assert client.xlen("out") == 1  # the writes before the failure stay


def test_a_key_outside_the_acl_refuses_the_whole_transaction(redis_server):
    admin = redis_server.client()
    acknowledgement = pending_batch(admin)
    admin.acl_setuser("writer", enabled=True, passwords=["+pw"], keys=["in", "errors", "out"],
                      commands=["+@all"])
    client = redis.Redis.from_url(redis_server.url.replace("redis://", "redis://writer:pw@"))
    writes = Writes()
    writes.add("XADD", "out", "*", b"m", b"1")
    writes.add("SET", "elsewhere", 1)
    acknowledgement.add_to(writes)
    with pytest.raises(redis.exceptions.NoPermissionError) as caught, \
            client.pipeline(transaction=True) as pipe:
        writes.queue(pipe)
        pipe.execute()
    assert bus.weather(caught.value) == "refused"
    assert admin.xpending("in", "g")["pending"] == 1 and not admin.exists("out")


def test_a_command_the_acl_refuses_in_the_script_is_a_refusal(redis_server):
    admin = redis_server.client()
    acknowledgement = pending_batch(admin)
    admin.acl_setuser("writer", enabled=True, passwords=["+pw"], keys=["*"],
                      commands=["+@all", "-zadd"])
    client = redis.Redis.from_url(redis_server.url.replace("redis://", "redis://writer:pw@"))
    writes = Writes()
    writes.add("ZADD", "index", 1.0, "a")
    acknowledgement.add_to(writes)
    with pytest.raises(redis.ResponseError) as caught, \
            client.pipeline(transaction=True) as pipe:
        writes.queue(pipe)
        pipe.execute()
    assert bus.weather(caught.value) == "refused"
    assert admin.xpending("in", "g")["pending"] == 1
