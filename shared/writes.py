"""A transaction's many writes sent to Redis as one command.

redis-py spends ~10 µs of Python on each command queued in a pipeline (queueing it, packing
it, parsing its QUEUED reply): a classifier batch writes a few hundred (each chunk's
prediction, the events and their indexes, each source's state and levels, the batch's
acknowledgement), which cost it more than its event rules. Writes collects them as plain
argument lists and queues them as one EVAL of a script that runs each in turn, so the client
packs one command and parses one reply.

The script runs inside the caller's MULTI/EXEC (its WATCH still guards the transaction), and
every key its commands write is declared, so Redis refuses it as it is queued, aborting the
whole EXEC with nothing written, where it refused one of the commands: out of memory (the
shebang makes Redis judge the script a write), a key outside the ACL user's patterns, keys of
two cluster slots (a shard's keys share its hash tag: shared/streams.py). Its ACL user needs
+@scripting (deploy/redis/soundhive.acl), and Redis 7 (the shebang: check() at start).
An error while it runs (a command the ACL user may not run, a key of the wrong type) stops it
there: the commands before stay written, those after do not, so a batch's acknowledgement goes
last and the batch is delivered again.
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
    """Write commands collected in order, queued in a pipeline as one: each one key's command
    whose key comes first ("XADD", key, ...), as Redis's own write commands are."""

    def __init__(self) -> None:
        self._args: list[Arg] = []
        self._keys: dict[str, None] = {}  # in order, once each
        self._count = 0

    def add(self, command: str, key: str, *args: Arg) -> None:
        self._args += (2 + len(args), command, key, *args)
        self._keys[key] = None
        self._count += 1

    def queue(self, pipe: redis.client.Pipeline) -> None:
        """Queue every command collected as one EVAL (nothing when there is none; a lone
        command as itself: one is already one command, refused or run whole).
        execute_command: redis-py's cluster pipelines have no eval(), but route an EVAL by its
        keys."""
        if self._count == 1:
            pipe.execute_command(*self._args[1:])
        elif self._args:
            pipe.execute_command("EVAL", _APPLY, len(self._keys), *self._keys, *self._args)


def check(client: redis.Redis) -> None:
    """Run the script with no commands: a ResponseError where this Redis cannot (older than
    Redis 7, whose scripts have no shebang), or where it refuses it now (out of memory, an ACL)."""
    client.execute_command("EVAL", _APPLY, 1, "soundhive:writes-check")
