"""deploy/k8s: every manifest passes `kubernetes-validate --strict` (KEDA and Prometheus
Operator resources: their CRD schemas, keda_schemas.py and monitoring_schemas.py), kustomize
builds every layout (`kubectl kustomize`, when kubectl is installed), references resolve, and
every soundhive container's command, ports, env names and probe paths are what the services
accept and serve (checked on the running compose stack)."""

import base64
import math
import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import Stack
from deploy_helpers import K8S, REPO, resolve_target
from keda_schemas import SCHEMAS as KEDA_SCHEMAS
from monitoring_schemas import SCHEMAS as MONITORING_SCHEMAS

from services.registry import SERVICES
from shared import streams
from shared.config import ProcessSettings, describe
from soundhive.settings_docs import DEPLOY_VARIABLES

LAYOUTS = ["base", "overlays/many-microphones", "overlays/gpu", "overlays/monitoring",
           "overlays/sharded"]
SCHEMAS = {**KEDA_SCHEMAS, **MONITORING_SCHEMAS}
K8S_VERSION = kubernetes_validate.latest_version()
_ENV_NAME = re.compile(r"\b(?:SOUNDHIVE_[A-Z0-9_]*[A-Z0-9]|REDIS_URL)\b")


def validate(doc: dict, where: str) -> None:
    schema = SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema is not None:
        jsonschema.validate(doc, schema)
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at "
                    f"{'.'.join(map(str, exc.path))}")


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml")
                  if p.name not in ("kustomization.yaml", "gpu-patch.yaml"))


def test_every_manifest_file_validates_strictly():
    files = manifest_files()
    assert len(files) >= 10
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                validate(doc, str(path.relative_to(REPO)))


def render(layout: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (for `kubectl kustomize`) is not installed; files are validated "
                    "one by one in test_every_manifest_file_validates_strictly")
    result = subprocess.run([kubectl, "kustomize", str(K8S / layout)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module", params=LAYOUTS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_kustomize_output_validates_and_references_resolve(rendered):
    layout, docs = rendered
    for doc in docs:
        validate(doc, layout)
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "soundhive", doc["metadata"]["name"]
    configmaps, secrets = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret")
    data = {**{n: {**c.get("data", {})} for n, c in configmaps.items()},
            **{n: {**s.get("stringData", {}), **s.get("data", {})} for n, s in secrets.items()}}
    workloads = {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}
    for name, workload in workloads.items():
        spec = workload["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                assert ref["name"] in data, f"{name}: {ref['name']} does not exist"
            for var in container.get("env", []):
                ref = var.get("valueFrom", {})
                ref = ref.get("configMapKeyRef") or ref.get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["key"] in data.get(ref["name"], {}), f"{name}: {ref}"
            assert {"requests", "limits"} <= set(container["resources"]), name
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in data
    # Every soundhive Deployment but the capture groups (one replica each) has a PDB.
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for name, workload in by_kind(docs, "Deployment").items():
        if not name.startswith("capture"):
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert any(set(p["spec"]["selector"]["matchLabels"].items()) <= set(labels.items())
                       for p in pdbs.values()), f"{name} has no PodDisruptionBudget"
    # Every Service selects pods that exist, on ports they declare.
    for name, service in by_kind(docs, "Service").items():
        selector = set(service["spec"]["selector"].items())
        matches = [w for w in workloads.values()
                   if selector <= set(w["spec"]["template"]["metadata"]["labels"].items())]
        assert matches, f"Service {name} selects nothing"


def test_keda_scales_features_and_classifier_on_their_consumer_group_lag(rendered):
    _, docs = rendered
    scaled = by_kind(docs, "ScaledObject")
    auths = by_kind(docs, "TriggerAuthentication")
    deployments = by_kind(docs, "Deployment")
    redis_service = by_kind(docs, "Service")["redis"]
    secrets = by_kind(docs, "Secret")
    count = int(by_kind(docs, "ConfigMap")["soundhive-config"]["data"]["SOUNDHIVE_SHARDS"])
    group_of = {shard.key(stream): group for stream, group in streams.CONSUMER_GROUPS.items()
                for shard in streams.shards(count)}
    served = {}  # service -> the streams its ScaledObjects watch
    for name, obj in scaled.items():
        assert obj["spec"]["scaleTargetRef"]["name"] in deployments
        service = name.partition("-g")[0]  # a shard group's: features-g0 (overlays/sharded)
        for trigger in obj["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert group_of[meta["stream"]] == meta["consumerGroup"] == service
            assert int(meta["lagCount"]) > int(meta["activationLagCount"]) > 0
            served.setdefault(service, []).append(meta["stream"])
        host, port = meta["address"].split(":")
        assert host == "redis" and int(port) == redis_service["spec"]["ports"][0]["port"]
        auth = auths[trigger["authenticationRef"]["name"]]
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secrets[ref["name"]]["stringData"]
    # Every shard's lag scales exactly one Deployment of each.
    assert {service: sorted(names) for service, names in served.items()} == {
        service: sorted(name for name, group in group_of.items() if group == service)
        for service in ("features", "classifier")}


def test_the_shard_groups_component_is_its_generators_default_render():
    generator = runpy.run_path(str(REPO / "deploy/k8s/to_shard_groups.py"))
    for name, text in generator["render"](6, 3, False).items():
        assert (K8S / "components/shards" / name).read_text() == text, (
            "regenerate: .venv/bin/python deploy/k8s/to_shard_groups.py")


def accepted_env(service: str) -> set[str]:
    """Every setting name the service's model (and every process's) reads, NAME_FILE for its
    secrets, and what the image's entrypoint and healthcheck read."""
    items = describe(SERVICES[service].settings) + describe(ProcessSettings)
    return ({item.env for item in items} | {f"{item.env}_FILE" for item in items if item.secret}
            | {item.env for item in DEPLOY_VARIABLES} | {"SOUNDHIVE_SERVICE"})


ALL_ACCEPTED = set().union(*(accepted_env(name) for name in SERVICES))


def test_configmap_and_secret_hold_settings_and_every_sink_secret(rendered):
    _, docs = rendered
    known = ALL_ACCEPTED
    config = by_kind(docs, "ConfigMap")["soundhive-config"]["data"]
    assert set(config) <= known, sorted(set(config) - known)
    secret = by_kind(docs, "Secret")["soundhive-secrets"]["stringData"]
    settings_in_secret = {key for key in secret if _ENV_NAME.fullmatch(key)}
    assert settings_in_secret <= known, sorted(settings_in_secret - known)
    notifier_secrets = {item.env for item in describe(SERVICES["notifier"].settings)
                        if item.secret and item.env not in ("REDIS_URL", "REDIS_URLS")}
    assert notifier_secrets <= set(secret), sorted(notifier_secrets - set(secret))
    notifier = by_kind(docs, "Deployment")["notifier"]["spec"]["template"]["spec"]
    passed = {var["name"] for var in notifier["containers"][0]["env"]}
    assert notifier_secrets <= passed, sorted(notifier_secrets - passed)


def test_secret_settings_and_capture_sources_never_sit_in_a_configmap(rendered):
    """Secrets (capture's sources among them: their URLs may carry passwords) come from
    Secrets; every capture group gets its sources so."""
    _, docs = rendered
    secrets = {item.env for service in SERVICES.values()
               for item in describe(service.settings) if item.secret}
    assert "SOUNDHIVE_CAPTURE_SOURCES" in secrets
    for name, configmap in by_kind(docs, "ConfigMap").items():
        assert not secrets & set(configmap.get("data", {})), name
    groups = [c for _, _, c in containers(docs) if c["args"] == ["soundhive", "serve", "capture"]]
    assert groups
    for container in groups:
        assert env_of(container, docs)["SOUNDHIVE_CAPTURE_SOURCES"]


def containers(docs: list[dict]):
    for workload in docs:
        if workload["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = workload["spec"]["template"]["spec"]
        for kind in ("initContainers", "containers"):
            for container in spec.get(kind, []):
                if container["image"].startswith("soundhive-"):
                    yield workload, kind, container


def values_of(doc: dict) -> dict[str, str]:
    """A ConfigMap's or Secret's values (a Secret's `data` is base64)."""
    data = doc.get("data", {})
    if doc["kind"] == "Secret":
        data = {key: base64.b64decode(value).decode() for key, value in data.items()}
    return {**data, **doc.get("stringData", {})}


def env_of(container: dict, docs: list[dict]) -> dict[str, str]:
    data = {d["metadata"]["name"]: values_of(d) for d in docs
            if d["kind"] in ("ConfigMap", "Secret")}
    env = {}
    for source in container.get("envFrom", []):
        env.update(data[(source.get("configMapRef") or source.get("secretRef"))["name"]])
    for var in container.get("env", []):
        source = var.get("valueFrom", {})
        ref = source.get("configMapKeyRef") or source.get("secretKeyRef")
        if "resourceFieldRef" in source:
            env[var["name"]] = resource_value(container, source["resourceFieldRef"])
        else:
            env[var["name"]] = data[ref["name"]].get(ref["key"], "") if ref else var["value"]
    return env


def resource_value(container: dict, field: dict) -> str:
    """What the downward API gives for limits.cpu with divisor 1: whole cores, rounded up."""
    assert field == {"resource": "limits.cpu", "divisor": "1"}, field
    cpu = str(container["resources"]["limits"]["cpu"])
    cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return str(math.ceil(cores))


def test_containers_match_what_the_services_accept_and_serve(rendered, stack: Stack):
    layout, docs = rendered
    seen = set()
    for workload, kind, container in containers(docs):
        image = container["image"].split(":")[0].removeprefix("soundhive-")
        target = resolve_target(image)
        service = target.env["SOUNDHIVE_SERVICE"]
        where = f"{layout} {workload['metadata']['name']}/{container['name']}"
        env = env_of(container, docs)
        if kind == "initContainers":
            assert container["args"][:3] == ["soundhive", "models", "pull"], where
            continue
        assert container["args"] == ["soundhive", "serve", service], where
        assert service in SERVICES
        seen.add(service)
        # The shared ConfigMap holds every service's settings; a container's own env only its.
        own = {var["name"] for var in container.get("env", [])}
        unknown = (own - accepted_env(service)) | (set(env) - ALL_ACCEPTED)
        assert not unknown, f"{where}: env names no code reads: {sorted(unknown)}"
        # The values are ones the service starts with.
        with pytest.MonkeyPatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("SOUNDHIVE_")]:
                patch.delenv(key)
            for key, value in env.items():
                patch.setenv(key, value.replace("/var/run/secrets/soundhive/api-token",
                                                str(REPO / "README.md")))
            spec = SERVICES[service]
            port = getattr(spec.settings(), spec.port_field)
            assert port == spec.port
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert list(ports.values()) == [port], where
        assert target.exposed == [port], where
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == port
        paths = {annotations["prometheus.io/path"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in container:
                get = container[probe]["httpGet"]
                assert ports.get(get["port"], get["port"]) == port, f"{where} {probe}"
                paths.add(get["path"])
        assert "livenessProbe" in container and "readinessProbe" in container, where
        running = stack.services[service]
        for path in sorted(paths):
            answer = running.get(port, path)
            assert answer.status_code == 200, f"{where}: {path} answers {answer.status_code}"
    assert seen == {name for name, service in SERVICES.items() if service.in_cluster}, seen
