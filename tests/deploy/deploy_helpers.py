"""Reading the deploy files as Docker and docker-compose would, to run them as local processes.

`compose_services()` resolves docker-compose.yml (variables, YAML anchors, profiles) and the
Dockerfile's ENV/ENTRYPOINT/CMD of each service's build target; `ProcessSpec` turns one service
into a local command and environment: service host names become 127.0.0.1 with their ports
remapped to free ones, container paths (/models, the entrypoint, the healthcheck) become the
repository's files."""

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pipeline_helpers import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "deploy/docker/entrypoint.sh"
HEALTHCHECK = REPO / "deploy/docker/healthcheck.py"
K8S = REPO / "deploy/k8s"
# Where the image puts them (Dockerfile COPY lines).
IMAGE_PATHS = {
    "soundhive-entrypoint": str(ENTRYPOINT),
    "/usr/local/lib/soundhive/healthcheck.py": str(HEALTHCHECK),
    "python": sys.executable,
}

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, variables: dict[str, str]) -> str:
    """docker-compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}."""

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = variables.get(name)
        if (op in (":-", ":?") and not value) or (op in ("-", "?") and value is None):
            if op and op.endswith("?"):
                raise ValueError(f"compose variable {name} is required: {arg}")
            return arg if op else ""
        return value or ""

    return _VARIABLE.sub(one, text)


def _interpolate_tree(node: object, variables: dict[str, str]) -> object:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_interpolate_tree(n, variables) for n in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, variables) for k, v in node.items()}
    return node


def load_compose(variables: dict[str, str] | None = None) -> dict:
    return _interpolate_tree(yaml.safe_load(COMPOSE_FILE.read_text()), variables or {})


@dataclass
class Stage:
    name: str
    parent: str
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    exposed: list[int] = field(default_factory=list)
    healthcheck: list[str] | None = None


def dockerfile_stages() -> dict[str, Stage]:
    """Each stage's own ENV, ENTRYPOINT, CMD, EXPOSE and HEALTHCHECK (exec forms)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            stage = Stage(parts[-1] if len(parts) == 3 else "", parts[0])
            stages[stage.name] = stage
        elif stage is None:
            continue
        elif word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                stage.env[key] = value
        elif word in ("ENTRYPOINT", "CMD"):
            setattr(stage, word.lower(), yaml.safe_load(rest))
        elif word == "EXPOSE":
            stage.exposed += [int(p.split("/")[0]) for p in rest.split()]
        elif word == "HEALTHCHECK":
            stage.healthcheck = yaml.safe_load(rest[rest.index("CMD") + 3:])
    return stages


def resolve_target(target: str) -> Stage:
    """A target with what it inherits from the stages it is built FROM."""
    stages = dockerfile_stages()
    chain = []
    name = target
    while name in stages:
        chain.append(stages[name])
        name = stages[name].parent
    merged = Stage(target, name)
    for stage in reversed(chain):
        merged.env.update(stage.env)
        merged.entrypoint = stage.entrypoint if stage.entrypoint is not None else merged.entrypoint
        merged.cmd = stage.cmd if stage.cmd is not None else merged.cmd
        merged.exposed = stage.exposed or merged.exposed
        merged.healthcheck = stage.healthcheck or merged.healthcheck
    return merged


def default_services(compose: dict) -> dict[str, dict]:
    """The services `docker compose up` starts without --profile."""
    return {name: s for name, s in compose["services"].items() if not s.get("profiles")}


def soundhive_services(compose: dict) -> dict[str, dict]:
    """Default-profile services built from this repository's Dockerfile."""
    return {name: s for name, s in default_services(compose).items() if "build" in s}


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def host_path(container_path: str, service: dict, volumes: dict[str, Path]) -> str | None:
    """The local folder standing for a container path, from the service's volumes."""
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2]
        if container_path == target or container_path.startswith(target + "/"):
            base = volumes.get(source) or (REPO / source if source.startswith(".") else None)
            if base is not None:
                return str(base) + container_path[len(target):]
    return None


def ports_in(service: dict) -> list[int]:
    """The ports a service listens on: its *_PORT settings."""
    return [int(v) for k, v in compose_env(service).items() if k.endswith("_PORT") and v]


METRIC_NAME = re.compile(r"\bsoundhive_[a-z0-9_]+")
GROUPING = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")  # the labels of by (...) and on (...)


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")
            if label.strip()}


def declared_metrics() -> dict[str, set[str]]:
    """Every metric family shared/metrics.py declares (counters without _total), with its
    label names: the module's metrics and the api's ConsumerGroups families."""
    from shared import metrics

    declared = {m._name: set(m._labelnames) for m in vars(metrics).values()
                if hasattr(m, "_name") and hasattr(m, "_labelnames")}
    for family in metrics.ConsumerGroups(list).describe():
        declared[family.name] = set(family._labelnames)
    return declared
