"""Every Prometheus metric, defined once, and the small HTTP server every service runs.

Each service process serves `GET /metrics` (Prometheus text format), `GET /healthz` (liveness:
200 `ok` while its main loop turns) and `GET /readyz` (readiness: 200 `ok` while it can do its
job, Redis answering; 503 with the reason otherwise) on one port, SOUNDHIVE_METRICS_PORT
(defaults per service in services/registry.py), bound to SOUNDHIVE_METRICS_HOST (0.0.0.0 in
containers; `soundhive up` uses 127.0.0.1).

Labelled series start at 0 where their label values are known (start_at_zero: a worker's, a
sink's, a source's when it starts), so the first increment is a rise that rate() and increase()
see. The bus metrics are labelled `worker` (features, classifier, notifier:<sink>; capture for
its Redis errors), not `service`: scrape configs attach their own `service` label to targets.
Consumer groups' lag and pending entries are not written by the consumers (a frozen consumer
would freeze them too): ConsumerGroups reads them from Redis at each scrape of the api.
"""

import errno
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

import redis
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.errors import UserError


class PortInUse(UserError, OSError):
    """A metrics port another process holds (one-line message)."""


# From 1 ms: a delivery to a local MQTT broker or a batch of a few entries takes milliseconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32,
                    64)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

# Bus (every worker): labelled by worker.
MESSAGES_IN = Counter("soundhive_messages_in_total", "Stream entries read", ["worker"])
MESSAGES_OUT = Counter("soundhive_messages_out_total", "Messages written", ["worker"])
MESSAGES_FAILED = Counter(
    "soundhive_messages_failed_total", "Entries whose processing raised", ["worker"]
)
DEAD_LETTER_KINDS = ("malformed", "failed", "unusable")
DEAD_LETTERS = Counter(
    "soundhive_dead_letters_total",
    "Entries sent to the dead-letter stream (kind: malformed, failed = too many deliveries, "
    "unusable = the handler can never use it)", ["worker", "kind"]
)
CLAIMED = Counter(
    "soundhive_claimed_messages_total", "Stale pending entries claimed from other consumers",
    ["worker"],
)
REDIS_ERROR_KINDS = ("unreachable", "refused", "out of memory", "read-only replica",
                     "stream or group gone", "unavailable", "error")
REDIS_ERRORS = Counter(
    "soundhive_redis_errors_total",
    "Redis calls that failed and were retried (kind: unreachable, out of memory, ...)",
    ["worker", "kind"],
)
BATCH_SIZE = Histogram(
    "soundhive_batch_size", "Entries per processed batch", ["worker"], buckets=_BATCH_BUCKETS
)
PROCESSING_SECONDS = Histogram(
    "soundhive_processing_seconds", "Time to process one batch", ["worker"],
    buckets=_LATENCY_BUCKETS,
)

# Capture.
CHUNKS_PUBLISHED = Counter(
    "soundhive_chunks_published_total", "PCM chunks written to the stream", ["source"]
)
DROP_REASONS = ("backlog", "redis", "shutdown")
AUDIO_DROPPED_SECONDS = Counter(
    "soundhive_audio_dropped_seconds_total",
    "Audio dropped, oldest first (reason: backlog = the pipeline is behind by more than "
    "SOUNDHIVE_BACKLOG_MAX chunks; redis = Redis could not take it; shutdown = left unwritten "
    "when capture stopped)", ["source", "reason"],
)
SOURCE_ERROR_KINDS = ("transient", "permanent")
SOURCE_ERRORS = Counter(
    "soundhive_source_errors_total",
    "Source failures (kind: transient = retried, permanent = the source is given up)",
    ["source", "kind"],
)
SOURCE_LEVEL = Gauge("soundhive_source_level_rms", "RMS level of the last chunk", ["source"])

# Classifier.
END_TO_END_LATENCY = Histogram(
    "soundhive_end_to_end_latency_seconds",
    "From a chunk's last sample being captured to its prediction and events being written",
    buckets=_LATENCY_BUCKETS,
)
EVENTS = Counter("soundhive_events_total", "Detection events written (kind: start | end)",
                 ["label", "kind"])
DUPLICATES = Counter(
    "soundhive_duplicates_skipped_total",
    "Chunks that reached the classifier again after their outputs were written",
)
CHUNKS_REORDERED = Counter(
    "soundhive_chunks_reordered_total",
    "Chunks that arrived before an earlier chunk of their source and waited for it",
)
CHUNKS_LOST = Counter(
    "soundhive_chunks_lost_total",
    "Chunks a source's sequence skipped after waiting SOUNDHIVE_REORDER_TIMEOUT_S for them "
    "(dead-lettered upstream, or Redis lost them)",
)
REDIS_DATA_LOST = Counter(
    "soundhive_redis_data_lost_total",
    "Times a classifier found that Redis had lost its data (flushed, or restarted without it)",
)

# Notifier: labelled by sink (devicehive, mqtt, webhook).
DELIVERY_OUTCOMES = ("delivered", "failed", "dead_lettered", "lost", "filtered", "rate_limited",
                     "disabled")
DELIVERIES = Counter(
    "soundhive_deliveries_total",
    "Events handled by a notifier sink (outcome: delivered; failed = an attempt the sink refused, "
    "retried; dead_lettered = given up on; lost = dropped by the events stream's bound before the "
    "sink had it; filtered, rate_limited, disabled = not sent on purpose)",
    ["sink", "outcome"],
)
DELIVERY_LATENCY = Histogram(
    "soundhive_delivery_latency_seconds",
    "From an event being written to the events stream to its sink acknowledging it",
    ["sink"], buckets=_LATENCY_BUCKETS,
)
SINK_CONNECTED = Gauge(
    "soundhive_sink_connected", "1 while the sink is reachable and accepts deliveries", ["sink"]
)
SINK_ENABLED = Gauge(
    "soundhive_sink_enabled",
    "1 while the sink has a destination (0: disabled, e.g. DeviceHive before its URL is set)",
    ["sink"],
)

# Recorder.
CLIPS = Counter(
    "soundhive_clips_total",
    "Event clips by what became of them (status: ready, withheld = privacy, dropped = their "
    "audio was not all held, skipped = not written: disk full or an error)", ["status"],
)
CLIPS_EXPIRED = Counter(
    "soundhive_clips_expired_total", "Clips removed by retention (reason: age | size)",
    ["reason"],
)
RECORDING_PAUSED = Gauge(
    "soundhive_recording_paused", "1 while the recorder writes no clips: the clips' disk is "
    "full",
)

# API.
API_REQUESTS = Counter(
    "soundhive_api_requests_total", "HTTP requests answered", ["route", "status"]
)
API_SECONDS = Histogram("soundhive_api_request_seconds", "Time to answer a request", ["route"],
                        buckets=_LATENCY_BUCKETS)
TOKEN_FAILURE_OUTCOMES = ("refused", "locked_out")
API_TOKEN_FAILURES = Counter(
    "soundhive_api_token_failures_total",
    "Requests with a wrong API token (outcome: refused = 401; locked_out = 429, their address "
    "sent too many wrong tokens lately)", ["outcome"],
)
SSE_CLIENTS = Gauge("soundhive_api_sse_clients", "Clients connected to GET /events/stream")
SSE_DROPPED = Counter(
    "soundhive_api_sse_dropped_total",
    "Live-stream clients dropped for falling more than SOUNDHIVE_API_SSE_QUEUE events behind "
    "(each got a `reconnect` event)",
)


def start_at_zero(metric: MetricWrapperBase, *values: Sequence[str]) -> None:
    """Create every combination of the label values (one sequence per label, in order) at 0."""
    for labels in itertools.product(*values):
        metric.labels(*labels)


class GroupBacklog(NamedTuple):
    stream: str
    group: str
    lag: int  # entries not yet delivered to the group
    pending: int  # delivered to a consumer, not yet acknowledged


class ConsumerGroups(Collector):
    """Every consumer group's lag and pending entries, as Redis has them at scrape time
    (`read`: shared/bus.py's group_backlogs). One process that is not a consumer (the api)
    exports them, so a stalled consumer's backlog stays visible; api replicas export the same
    series, so queries take max() over them."""

    def __init__(self, read: Callable[[], Iterable[GroupBacklog]]):
        self._read = read

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        lag, pending, redis_up = self._families()
        try:
            groups = list(self._read())
        except redis.RedisError:
            redis_up.add_metric([], 0)
        else:
            redis_up.add_metric([], 1)
            for group in groups:
                lag.add_metric([group.stream, group.group], group.lag)
                pending.add_metric([group.stream, group.group], group.pending)
        yield from (lag, pending, redis_up)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "soundhive_stream_lag_messages",
                "Entries of the stream not yet delivered to the consumer group (its backlog)",
                labels=["stream", "group"]),
            GaugeMetricFamily(
                "soundhive_pending_messages",
                "Entries delivered to a consumer of the group and not yet acknowledged",
                labels=["stream", "group"]),
            GaugeMetricFamily(
                "soundhive_consumer_groups_readable",
                "1 when Redis answered the consumer group query of this scrape, else 0"),
        )


class Health:
    """Liveness and readiness of a service process.

    Live (/healthz): every watched part works (watch) and the main loop turns: it calls beat()
    after a good turn, or fail(reason) after a turn that met trouble it waits out (Redis
    unreachable), at least every stale_after_s. Ready (/readyz): live, the last turn of every
    part was good, and every required condition holds (require). A process serving several
    shards beats and fails per shard (`part`): one shard's trouble keeps it unready, whatever
    the others' turns do, and the reason names every such shard (sorted). Redis trouble makes
    a service unready, never un-live: restarting it would not bring Redis back."""

    def __init__(self, stale_after_s: float = 60.0):
        self.stale_after_s = stale_after_s
        self._last_turn = time.monotonic()
        self._problems: dict[str, str] = {}  # part ("": the whole process) -> its trouble
        self._lock = threading.Lock()
        self._live_checks: list[tuple[str, Callable[[], bool]]] = []
        self._ready_checks: list[tuple[str, Callable[[], bool]]] = []

    def watch(self, check: Callable[[], bool], what: str = "a worker thread died") -> None:
        """A condition the process needs to work at all (e.g. a helper thread is alive)."""
        self._live_checks.append((what, check))

    def require(self, check: Callable[[], bool], what: str) -> None:
        """A condition the process needs to do its job now."""
        self._ready_checks.append((what, check))

    def beat(self, part: str = "") -> None:
        with self._lock:
            self._last_turn = time.monotonic()
            self._problems.pop(part, None)

    def fail(self, reason: str, part: str = "") -> None:
        with self._lock:
            self._last_turn = time.monotonic()
            self._problems[part] = reason

    def liveness(self) -> tuple[bool, str]:
        for what, check in self._live_checks:
            if not check():
                return False, what
        age = time.monotonic() - self._last_turn
        if age > self.stale_after_s:
            return False, f"main loop silent for {age:.0f} s"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        live, reason = self.liveness()
        if not live:
            return live, reason
        with self._lock:
            problems = sorted(self._problems.items())
        if problems:
            return False, "; ".join(f"{part}: {reason}" if part else reason
                                    for part, reason in problems)
        for what, check in self._ready_checks:
            if not check():
                return False, what
        return True, "ok"


def serve(port: int, health: Health, host: str) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz (liveness) and /readyz (readiness) on a daemon thread; port 0
    picks a free one. A port in use is a PortInUse error naming it."""
    routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
        "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest()),
        "/healthz": lambda: _health_response(health.liveness()),
        "/readyz": lambda: _health_response(health.readiness()),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?")[0])
            code, ctype, body = route() if route else (404, "text/plain", b"not found\n")
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise PortInUse(f"metrics port {host}:{port} is already in use (set "
                        "SOUNDHIVE_METRICS_PORT, or `up --metrics-port-base`)") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _health_response(answer: tuple[bool, str]) -> tuple[int, str, bytes]:
    ok, reason = answer
    return (200 if ok else 503), "text/plain", (reason + "\n").encode()
