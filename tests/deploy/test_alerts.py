"""The alert rules (deploy/prometheus/alerts.yml): valid for Prometheus, each one firing on its
trouble and quiet otherwise (`promtool test rules` on alerts_test.yml), over metrics and labels
the services declare; loaded by the compose Prometheus; the same rules in the Kubernetes
PrometheusRule, whose PodMonitor scrapes every soundhive pod as the job the rules watch."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from deploy_helpers import METRIC_NAME, REPO, declared_metrics, grouping_labels, load_compose

RULES = REPO / "deploy/prometheus/alerts.yml"
PROMETHEUS_CONFIG = REPO / "deploy/prometheus/prometheus.yml"
RULE_TESTS = Path(__file__).parent / "alerts_test.yml"
MONITORING = REPO / "deploy/k8s/components/monitoring"
ALERTS = ("SoundhiveServiceDown", "SoundhiveConsumerLagGrowing", "SoundhiveAudioDropped",
          "SoundhiveDeadLetters", "SoundhiveSinkNotConnected", "SoundhiveSourceFailed")


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: scripts/install.sh installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def test_prometheus_config_and_rules_are_valid():
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout  # the config loads alerts.yml


def test_every_alert_fires_on_its_trouble_and_only_then():
    assert sorted(rule["alert"] for rule in rules()) == sorted(ALERTS)
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for case in test["alert_rule_test"]]
    for alert in ALERTS:
        expected = [case["exp_alerts"] for case in cases if case["alertname"] == alert]
        assert [] in expected and any(expected), f"{alert}: a quiet case and a firing case"
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_query_declared_metrics_by_their_labels():
    labels_of = declared_metrics()
    for rule in rules():
        names = set(METRIC_NAME.findall(rule["expr"]))
        assert names or "up{" in rule["expr"], rule["alert"]
        undeclared = {name for name in names if name.removesuffix("_total") not in labels_of}
        assert not undeclared, f"{rule['alert']}: {sorted(undeclared)} are not declared"
        labels = set().union(*(labels_of[name.removesuffix("_total")] for name in names))
        assert grouping_labels(rule["expr"]) <= labels, f"{rule['alert']}: {sorted(labels)}"


def test_compose_prometheus_loads_the_rules():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    volumes = load_compose()["services"]["prometheus"]["volumes"]
    config_dir = "/etc/prometheus"
    assert f"./deploy/prometheus/prometheus.yml:{config_dir}/prometheus.yml:ro" in volumes
    for rule_file in config["rule_files"]:
        assert f"./deploy/prometheus/{rule_file}:{config_dir}/{rule_file}:ro" in volumes
    assert "soundhive" in {job["job_name"] for job in config["scrape_configs"]}  # ServiceDown


def test_kubernetes_ships_the_same_rules():
    shipped = yaml.safe_load((MONITORING / "prometheus-rule.yaml").read_text())
    assert shipped["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], (
        "regenerate: .venv/bin/python deploy/prometheus/to_prometheusrule.py")
    generator = REPO / "deploy/prometheus/to_prometheusrule.py"
    rendered = subprocess.run([sys.executable, "-c", "import runpy, sys; sys.stdout.write("
                               f"runpy.run_path({str(generator)!r})['render']())"],
                              capture_output=True, text=True, check=True).stdout
    assert rendered == (MONITORING / "prometheus-rule.yaml").read_text()


def test_pod_monitor_scrapes_every_soundhive_pod_as_the_job_the_rules_watch():
    monitor = yaml.safe_load((MONITORING / "pod-monitor.yaml").read_text())["spec"]
    ports = {endpoint["port"]: endpoint["path"] for endpoint in monitor["podMetricsEndpoints"]}
    workloads = [doc for path in sorted((REPO / "deploy/k8s").rglob("*.yaml"))
                 for doc in yaml.safe_load_all(path.read_text())
                 if isinstance(doc, dict) and doc.get("kind") == "Deployment"]
    assert len(workloads) >= 5
    for workload in workloads:
        pod = workload["spec"]["template"]
        labels = pod["metadata"]["labels"]
        name = workload["metadata"]["name"]
        assert monitor["selector"]["matchLabels"].items() <= labels.items(), name
        assert labels[monitor["jobLabel"]] == "soundhive", name  # up{job="soundhive"}
        (container,) = pod["spec"]["containers"]
        named = {port["name"]: port["containerPort"] for port in container["ports"]}
        scraped = [(named[port], path) for port, path in ports.items() if port in named]
        annotations = pod["metadata"]["annotations"]
        assert scraped == [(int(annotations["prometheus.io/port"]),
                            annotations["prometheus.io/path"])], name
