"""Every service, declared once: its name, module, settings model, port and probe paths, and the
one way to start one as a child process. Used by `soundhive up` and `serve`, the tests and the
benchmarks.

A child runs `python -P -m soundhive serve NAME [OPTIONS]` (what a container runs): -P keeps
the working directory off sys.path, so a folder holding its own `shared/` or `services/` cannot
shadow soundhive's packages. `launch` writes the settings it is given into the child's
environment, where the service reads them.
"""

import importlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.api.settings import ApiSettings
from services.capture.settings import CaptureSettings
from services.classifier.settings import ClassifierSettings
from services.edge.settings import EdgeSettings
from services.features.settings import FeaturesSettings
from services.notifier.settings import NotifierSettings
from services.recorder.settings import RecorderSettings
from shared.config import SettingsModel

HEALTH_PATH = "/healthz"  # liveness: the process works
READY_PATH = "/readyz"  # readiness: it can do its job now (Redis answers, model loaded)


@dataclass(frozen=True)
class Service:
    name: str
    summary: str
    settings: type[SettingsModel]
    port_field: str = "metrics_port"
    host_field: str = "metrics_host"
    in_cluster: bool = True  # deployed by docker-compose.yml and deploy/k8s (edge: by hand)

    @property
    def module(self) -> str:
        return f"services.{self.name}"

    @property
    def port(self) -> int:
        """The default port (of the api itself, or of a worker's metrics and probes)."""
        return self.settings.model_fields[self.port_field].default

    @property
    def port_env(self) -> str:
        return self.settings.env_name(self.port_field)

    def main(self) -> Callable[[Any], int | None]:
        """The service's main(settings), imported on demand (TensorFlow stays unimported)."""
        return importlib.import_module(f"{self.module}.service").main

    def command(self, *options: str) -> list[str]:
        return [sys.executable, "-P", "-m", "soundhive", "serve", self.name, *options]

    def launch(self, env: dict[str, str], settings: dict[str, Any] | None = None,
               options: tuple[str, ...] = (), **popen: Any) -> subprocess.Popen:
        """Start the service as a child process with `env` plus `settings` (field -> value)
        written as their environment variables, and its CLI `options`; popen: Popen's other
        arguments."""
        child_env = {**env, **self.settings.environment(**(settings or {}))}
        return subprocess.Popen(self.command(*options), env=child_env, **popen)


SERVICES: dict[str, Service] = {s.name: s for s in (
    Service("capture", "Microphones, files and network streams -> 16 kHz PCM chunks.",
            CaptureSettings),
    Service("features", "PCM chunks -> embeddings (YAMNet or VGGish), in batches.",
            FeaturesSettings),
    Service("classifier", "Embeddings -> per-class scores -> detection events.",
            ClassifierSettings),
    Service("notifier", "Events -> DeviceHive, MQTT (Home Assistant) and webhooks.",
            NotifierSettings),
    Service("recorder", "Events -> clips of what was heard and their spectrograms.",
            RecorderSettings),
    Service("api", "Events API, live stream, uploads and the dashboard.", ApiSettings, "port",
            "host"),
    Service("edge", "Capture and features in one process near the microphones, only "
            "embeddings to the cluster; it reads capture's and features' settings.",
            EdgeSettings, in_cluster=False),
)}
