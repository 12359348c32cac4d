"""Every Prometheus metric, defined once, and the small HTTP server every service runs.

Each service process serves `GET /metrics` (Prometheus text format) and `GET /healthz`
(200 `ok` while its main loop is alive and Redis answers, 503 with the reason otherwise) on one
port; defaults are in shared/config.py (capture 9101, features 9102, classifier 9103).
"""

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

# Bus (every worker): labelled by service.
MESSAGES_IN = Counter("soundhive_messages_in_total", "Stream entries read", ["service"])
MESSAGES_OUT = Counter("soundhive_messages_out_total", "Messages written", ["service"])
MESSAGES_FAILED = Counter(
    "soundhive_messages_failed_total", "Entries whose processing raised", ["service"]
)
DEAD_LETTERS = Counter(
    "soundhive_dead_letters_total", "Entries sent to the dead-letter stream", ["service", "kind"]
)
CLAIMED = Counter(
    "soundhive_claimed_messages_total", "Stale pending entries claimed from other consumers",
    ["service"],
)
RECONNECTS = Counter("soundhive_redis_reconnects_total", "Redis connection losses", ["service"])
BATCH_SIZE = Histogram(
    "soundhive_batch_size", "Entries per processed batch", ["service"], buckets=_BATCH_BUCKETS
)
PROCESSING_SECONDS = Histogram(
    "soundhive_processing_seconds", "Time to process one batch", ["service"]
)
STREAM_LAG = Gauge(
    "soundhive_stream_lag_messages", "Entries in the input stream not yet read by the group",
    ["service"],
)
PENDING = Gauge(
    "soundhive_pending_messages", "Entries read by the group but not yet acknowledged", ["service"]
)

# Capture.
CHUNKS_PUBLISHED = Counter(
    "soundhive_chunks_published_total", "PCM chunks written to the stream", ["source"]
)
AUDIO_DROPPED_SECONDS = Counter(
    "soundhive_audio_dropped_seconds_total",
    "Audio dropped (oldest first) because Redis could not take it fast enough", ["source"],
)
SOURCE_ERRORS = Counter(
    "soundhive_source_errors_total", "Source failures (each one is retried)", ["source"]
)
SOURCE_LEVEL = Gauge("soundhive_source_level_rms", "RMS level of the last chunk", ["source"])

# Classifier.
END_TO_END_LATENCY = Histogram(
    "soundhive_end_to_end_latency_seconds",
    "From the capture of a chunk's first sample to its prediction being written",
    buckets=_LATENCY_BUCKETS,
)
EVENTS = Counter("soundhive_events_total", "Detection events written", ["kind"])
DUPLICATES = Counter(
    "soundhive_duplicates_skipped_total", "Redelivered entries whose outputs already existed"
)


class Health:
    """Liveness for /healthz: the main loop calls beat(); Redis trouble calls fail(reason)."""

    def __init__(self, stale_after_s: float = 60.0):
        self.stale_after_s = stale_after_s
        self._last_beat = time.monotonic()
        self._problem: str | None = None

    def beat(self) -> None:
        self._last_beat = time.monotonic()
        self._problem = None

    def fail(self, reason: str) -> None:
        self._problem = reason

    def status(self) -> tuple[bool, str]:
        if self._problem:
            return False, self._problem
        age = time.monotonic() - self._last_beat
        if age > self.stale_after_s:
            return False, f"main loop silent for {age:.0f} s"
        return True, "ok"


def serve(port: int, health: Health, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /metrics and /healthz on a daemon thread; port 0 picks a free one."""
    routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
        "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest()),
        "/healthz": lambda: _health_response(health),
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

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _health_response(health: Health) -> tuple[int, str, bytes]:
    ok, reason = health.status()
    return (200 if ok else 503), "text/plain", (reason + "\n").encode()
