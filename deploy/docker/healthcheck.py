"""Container healthcheck: GET the service's own health endpoint on 127.0.0.1; exit 0 when it
answers 200. The service comes from SOUNDHIVE_SERVICE (set per image target) and its port from
the same environment the service reads (SOUNDHIVE_METRICS_PORT, SOUNDHIVE_API_PORT), so a port
moved by configuration is still the port checked. It imports only the standard library, to stay
well inside Docker's 5 s timeout on a busy host; tests/deploy/test_compose_settings.py checks
its default ports against the service registry's."""

import os
import sys
import urllib.request

DEFAULT_PORTS = {"capture": 9101, "features": 9102, "classifier": 9103, "notifier": 9104,
                 "recorder": 9105, "edge": 9106}
DEFAULT_API_PORT = 8000


def url() -> str:
    service = os.environ.get("SOUNDHIVE_SERVICE", "")
    if service == "api":
        port = os.environ.get("SOUNDHIVE_API_PORT") or DEFAULT_API_PORT
        return f"http://127.0.0.1:{port}/healthz"
    if service not in DEFAULT_PORTS:
        sys.exit(f"healthcheck: SOUNDHIVE_SERVICE must be one of api, {', '.join(DEFAULT_PORTS)}")
    port = os.environ.get("SOUNDHIVE_METRICS_PORT") or DEFAULT_PORTS[service]
    return f"http://127.0.0.1:{port}/healthz"


def main() -> None:
    try:
        with urllib.request.urlopen(url(), timeout=4) as response:
            sys.exit(0 if response.status == 200 else 1)
    except OSError as exc:
        sys.exit(f"healthcheck: {exc}")


if __name__ == "__main__":
    main()
