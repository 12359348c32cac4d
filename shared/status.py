"""What the pipeline says about its sources right now: capture's status of each source with the
classifier's latest prediction for it (level, top labels). Read by the api and `soundhive up`."""

import math
from dataclasses import dataclass

import redis

from shared import streams
from shared.messages import MessageError, Prediction, SourceStatus

SILENCE_DBFS = -100.0


@dataclass(frozen=True)
class SourceView:
    status: SourceStatus
    latest: Prediction | None

    @property
    def rms(self) -> float:
        return self.latest.rms if self.latest else self.status.rms

    @property
    def dbfs(self) -> float:
        return dbfs(self.rms)


def dbfs(rms: float) -> float:
    """RMS (full scale 1.0) in dB relative to full scale, floored at SILENCE_DBFS."""
    return round(max(SILENCE_DBFS, 20 * math.log10(rms)) if rms > 0 else SILENCE_DBFS, 1)


def read_sources(client: redis.Redis) -> list[SourceView]:
    """Every source capture reported, sorted by id."""
    statuses = _decode_all(client.hgetall(streams.SOURCES_HASH), SourceStatus)
    latest = _decode_all(client.hgetall(streams.LATEST_PREDICTIONS), Prediction)
    return [SourceView(statuses[name], latest.get(name)) for name in sorted(statuses)]


def _decode_all(raws: dict[bytes, bytes], schema: type) -> dict:
    decoded = {}
    for key, raw in raws.items():
        try:
            decoded[key.decode()] = schema.decode(raw)
        except MessageError:
            continue
    return decoded
