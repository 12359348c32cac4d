"""Container healthcheck: GET the service's own liveness probe on 127.0.0.1; exit 0 when it
answers 200. The service comes from SOUNDHIVE_SERVICE (set per image target), its port and probe
path from the service registry (services/registry.py), the port moved by the same variable the
service reads (SOUNDHIVE_METRICS_PORT, SOUNDHIVE_API_PORT)."""

import os
import sys
import urllib.request

from services.registry import HEALTH_PATH, SERVICES


def url() -> str:
    service = SERVICES.get(os.environ.get("SOUNDHIVE_SERVICE", ""))
    if service is None:
        sys.exit(f"healthcheck: SOUNDHIVE_SERVICE must be one of {', '.join(SERVICES)}")
    port = os.environ.get(service.port_env) or service.port
    return f"http://127.0.0.1:{port}{HEALTH_PATH}"


def main() -> None:
    try:
        with urllib.request.urlopen(url(), timeout=4) as response:
            sys.exit(0 if response.status == 200 else 1)
    except OSError as exc:
        sys.exit(f"healthcheck: {exc}")


if __name__ == "__main__":
    main()
