"""A transaction's many writes sent to Redis as one command.

redis-py spends ~10 µs of Python on each command queued in a pipeline (queueing it, packing
it, parsing its QUEUED reply): a classifier batch writes a few hundred (each chunk's
prediction, the events and their indexes, each source's state), which cost it more than its
event rules. Writes collects them as plain argument lists and queues them as one EVAL of a
script that runs each in turn, so the client packs one command and parses one reply.

The script runs inside the caller's MULTI/EXEC (its WATCH still guards the transaction). Its
shebang makes Redis judge it a write as it is queued, as it judges an XADD: out of memory, the
EXEC is aborted whole, nothing written. Every key it touches must be in the same Redis Cluster
slot as `route_key` (a shard's keys share its hash tag: shared/streams.py), and its ACL user
needs +@scripting (deploy/redis/soundhive.acl).
"""

import redis

_APPLY = """#!lua
local i, n = 1, #ARGV
while i <= n do
  local count = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + count))
  i = i + count + 1
end
"""

Arg = str | bytes | int | float


class Writes:
    """Write commands ("XADD", key, ...) collected in order, queued in a pipeline as one."""

    def __init__(self) -> None:
        self._args: list[Arg] = []
        self._count = 0

    def add(self, *command: Arg) -> None:
        self._args += (len(command), *command)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def queue(self, pipe: redis.client.Pipeline, route_key: str) -> None:
        """Queue every command collected as one EVAL, routed (in a cluster) by `route_key`.
        execute_command: redis-py's cluster pipelines have no eval(), but route an EVAL by its
        keys."""
        if self._args:
            pipe.execute_command("EVAL", _APPLY, 1, route_key, *self._args)



def check(client: redis.Redis) -> None:
    """Run the script with no commands: a ResponseError where this Redis cannot (older than
    Redis 7, whose scripts have no shebang), or where it refuses it now (out of memory, an ACL)."""
    client.execute_command("EVAL", _APPLY, 1, "soundhive:writes-check")
