"""Where each shard of the streams lives (shared/streams.py says what a shard is), and the
Redis clients that reach it:

  - one Redis (REDIS_URL, the default): every shard's keys on it;
  - several independent servers (REDIS_URLS): shard i on server i modulo their number, the
    global keys on the first;
  - a Redis Cluster (SOUNDHIVE_REDIS_CLUSTER=1, REDIS_URL any node): one cluster client, which
    follows MOVED/ASK redirections; each shard's keys share a slot (their hash tag).

    topology = Topology.connect(settings, block_ms)
    topology.client(shard)      the client of a shard's keys
    topology.home               the client of the global keys
    topology.served             the shards this worker serves (SOUNDHIVE_SHARD_IDS, or all)
    topology.claim_shard_count()   records SOUNDHIVE_SHARDS in Redis, or refuses another count
    topology.prepare_to_write()    that, and every server checked to run shared/writes.py's script
    topology.shard_count_problem()  why not, for a reader (the api's readiness)
    topology.group_backlogs()      every shard's consumer groups, their lag and pending entries
    topology.unreachable_shards()  which served shards' Redis does not answer now (readiness)
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from shared import bus, metrics, streams, writes
from shared.config import ConfigError, RedisSettings
from shared.errors import one_line
from shared.redact import redact


def connect_cluster(url: str, block_ms: int = 1000) -> RedisCluster:
    """A cluster client seeded by `url` (timeouts as bus.connect's); ConfigError (one line)
    when no node answers."""
    try:
        return RedisCluster.from_url(url, socket_timeout=block_ms / 1000 + 10,
                                     socket_connect_timeout=5)
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        raise ConfigError(f"SOUNDHIVE_REDIS_CLUSTER: no cluster node answers at "
                          f"{redact(url)} ({exc})") from None


@dataclass(frozen=True)
class Topology:
    count: int
    served: tuple[streams.Shard, ...]
    servers: tuple[redis.Redis, ...]  # shard i on servers[i % len(servers)]

    @classmethod
    def connect(cls, settings: RedisSettings, block_ms: int = 1000,
                connect: Callable[[str], redis.Redis] | None = None) -> "Topology":
        """`connect`: how to reach a standalone server's URL (default: bus.connect)."""
        if settings.redis_cluster:
            servers: tuple[redis.Redis, ...] = (connect_cluster(settings.redis_url, block_ms),)
        else:
            urls = settings.redis_urls or (settings.redis_url,)
            servers = tuple(connect(url) if connect else bus.connect(url, block_ms)
                            for url in urls)
        every = streams.shards(settings.shards)
        served = tuple(every[i] for i in settings.shard_ids) if settings.shard_ids else every
        return cls(settings.shards, tuple(served), servers)

    @property
    def home(self) -> redis.Redis:
        return self.servers[0]

    @property
    def every(self) -> list[streams.Shard]:
        return streams.shards(self.count)

    def client(self, shard: streams.Shard) -> redis.Redis:
        return self.servers[shard.index % len(self.servers)]

    def claim_shard_count(self) -> None:
        """Record the shard count where there is none; ConfigError when Redis's data was
        written with another (a RedisError propagates: Redis trouble is waited out)."""
        self.home.set(streams.SHARD_COUNT, self.count, nx=True)
        problem = self.shard_count_problem()
        if problem is not None:
            raise ConfigError(problem)

    def prepare_to_write(self) -> None:
        """claim_shard_count, and each server checked to run the script of shared/writes.py:
        ConfigError (one line) where one cannot, or where a cluster has one shard, named once
        at start rather than met by every batch until it is dead-lettered; Redis trouble (out
        of memory, a refusal) propagates to be waited out."""
        if self.count == 1 and isinstance(self.home, RedisCluster):
            raise ConfigError("SOUNDHIVE_REDIS_CLUSTER needs SOUNDHIVE_SHARDS of 2 or more: "
                              "one shard's keys carry no hash tag, and its transactions would "
                              "span the cluster's slots")
        self.claim_shard_count()
        for server in self.servers:
            try:
                writes.check(server)
            except redis.ResponseError as exc:
                if bus.weather(exc) is not None:
                    raise
                raise ConfigError(f"REDIS_URL: this Redis cannot run soundhive's write script "
                                  f"(Redis 7 or later is needed): {one_line(exc)}") from None

    def shard_count_problem(self) -> str | None:
        """Why this shard count is not the one Redis's data was written with (None: it is, or
        none is recorded yet)."""
        recorded = int(self.home.get(streams.SHARD_COUNT) or self.count)
        if recorded == self.count:
            return None
        return (f"SOUNDHIVE_SHARDS: this pipeline's Redis was written with {recorded} shards, "
                f"not {self.count}: use {recorded} (a new count needs new streams, "
                f"docs/deploy.md)")

    def group_backlogs(self) -> list[metrics.GroupBacklog]:
        """bus.group_backlogs of every shard's group streams, a round trip per server."""
        names: dict[int, list[str]] = {}
        for shard in self.every:
            names.setdefault(id(self.client(shard)), []).extend(
                shard.key(stream) for stream in streams.GROUP_STREAMS)
        return [backlog for server in self.servers
                for backlog in bus.group_backlogs(server, names.get(id(server), []))]

    def unreachable_shards(self) -> list[str]:
        """One line per Redis server (or cluster node) of the served shards that does not
        answer a PING now, naming its shards, in shard order; [] when every one answers."""
        probes: dict[str, tuple[Callable[[], object], list[int]]] = {}
        for shard in self.served:
            client = self.client(shard)
            where, probe = str(id(client)), client.ping
            if isinstance(client, RedisCluster):
                try:
                    node = client.get_node_from_key(shard.key(streams.PCM_STREAM))
                except RedisClusterException:  # its slot has no node now
                    node = None
                where = node.name if node else "no node"
                probe = partial(client.ping, target_nodes=node) if node else _no_node
            probes.setdefault(where, (probe, []))[1].append(shard.index)
        problems = []
        for probe, indexes in probes.values():
            try:
                probe()
            except (redis.RedisError, RedisClusterException) as exc:
                kind = bus.weather(exc) or type(exc).__name__
                problems.append(f"redis {kind} on shard{'s' * (len(indexes) > 1)} "
                                f"{', '.join(map(str, indexes))}")
        return problems

    def close(self) -> None:
        for server in self.servers:
            server.close()


def _no_node() -> None:
    raise RedisClusterException("no cluster node serves the slot")
