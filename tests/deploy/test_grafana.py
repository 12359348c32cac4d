"""The Grafana dashboard queries only what the running pipeline exports, by the labels it has;
the Kubernetes ConfigMap ships the same dashboard; the compose provisioning points at it."""

import json
import re

import yaml
from conftest import Stack
from deploy_helpers import METRIC_NAME, REPO, declared_metrics, grouping_labels

DASHBOARD = REPO / "deploy/grafana/dashboards/soundhive.json"
_SUFFIXES = ("_bucket", "_sum", "_count")


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def declared(text: str) -> dict[str, str]:
    """`# TYPE name kind` lines of a /metrics answer."""
    return dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))


def sampled(text: str) -> set[str]:
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def scrape(stack: Stack) -> tuple[dict[str, str], set[str]]:
    types, samples = {}, set()
    for name, service in stack.services.items():
        (port,) = service.ports  # the one port each service listens on
        answer = service.get(port, "/metrics")
        assert answer.status_code == 200, name
        types.update(declared(answer.text))
        samples |= sampled(answer.text)
    return types, samples


def test_every_dashboard_metric_is_exported_with_its_labels(stack: Stack, dog_event: dict):
    types, samples = scrape(stack)
    labels_of = declared_metrics()
    for expr in queries():
        names = set(METRIC_NAME.findall(expr))
        assert names, expr
        for name in names:
            base = family(name)
            kind = types.get(base)
            assert kind, f"{name} (in {expr!r}) is not exported by any service"
            if kind == "histogram":
                assert name != base, f"{name}: query a histogram's _bucket/_sum/_count"
            else:
                assert name == base, f"{name}: a {kind} has no {name[len(base):]} series"
            labels = labels_of[base.removesuffix("_total")] | {"le"}
            assert grouping_labels(expr) <= labels, f"{expr!r}: {base} has {sorted(labels)}"
    # The clip's run really fills the main panels.
    for name in ("soundhive_messages_in_total", "soundhive_chunks_published_total",
                 "soundhive_end_to_end_latency_seconds_bucket", "soundhive_events_total",
                 "soundhive_batch_size_bucket", "soundhive_processing_seconds_bucket",
                 "soundhive_stream_lag_messages", "soundhive_api_requests_total"):
        assert name in samples, f"no {name} sample after the clip went through"


def test_dashboard_covers_the_issue_panels():
    text = " ".join(queries())
    for name in ("soundhive_messages_in_total", "soundhive_stream_lag_messages",
                 "soundhive_batch_size_bucket", "soundhive_processing_seconds_bucket",
                 "soundhive_end_to_end_latency_seconds_bucket", "soundhive_events_total",
                 "soundhive_audio_dropped_seconds_total", "soundhive_dead_letters_total",
                 "soundhive_deliveries_total"):
        assert name in text, name
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(soundhive_end_to_end" in text


def test_kubernetes_configmap_ships_the_same_dashboard():
    configmap = yaml.safe_load((REPO / "deploy/k8s/base/grafana-dashboard.yaml").read_text())
    assert configmap["data"]["soundhive.json"] == DASHBOARD.read_text(), (
        "regenerate: .venv/bin/python deploy/grafana/to_configmap.py")
    assert configmap["metadata"]["labels"] == {"grafana_dashboard": "1"}


def test_compose_provisions_datasource_and_dashboard():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    provider = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/soundhive.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in volumes
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    source = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
