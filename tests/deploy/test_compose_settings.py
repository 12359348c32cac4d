"""docker-compose.yml passes every setting: each soundhive container (every profile) gets every
setting its service's model reads (and NAME_FILE for its secrets), from .env through the
x-settings block, set by compose itself, or by its image; nothing it passes is unknown."""

import importlib.util

import yaml
from deploy_helpers import COMPOSE_FILE, HEALTHCHECK, compose_env, load_compose, resolve_target

from services.registry import SERVICES
from shared.config import ProcessSettings, describe
from soundhive.settings_docs import DEPLOY_VARIABLES


def names(items: list) -> set[str]:
    """The variables: each setting, and NAME_FILE for a secret (REDIS_URL's is compose's)."""
    return {item.env for item in items} | {
        f"{item.env}_FILE" for item in items if item.secret and item.env != "REDIS_URL"}


KNOWN = names([item for s in SERVICES.values() for item in describe(s.settings)]
              + describe(ProcessSettings) + DEPLOY_VARIABLES)


def test_every_container_gets_every_setting_of_its_service():
    compose = load_compose()
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        image = resolve_target(service["build"]["target"])
        model = SERVICES[image.env["SOUNDHIVE_SERVICE"]].settings
        expected = names(describe(model) + describe(ProcessSettings))
        given = set(compose_env(service)) | set(image.env)
        assert expected <= given, f"{name} lacks {sorted(expected - given)}"
        assert set(compose_env(service)) <= KNOWN, sorted(set(compose_env(service)) - KNOWN)


def test_x_settings_passes_values_through_unchanged():
    block = yaml.safe_load(COMPOSE_FILE.read_text())["x-settings"]
    assert all(value == f"${{{key}:-}}" for key, value in block.items())


def test_the_container_healthcheck_knows_the_registrys_ports():
    spec = importlib.util.spec_from_file_location("healthcheck", HEALTHCHECK)
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    ports = {**healthcheck.DEFAULT_PORTS, "api": healthcheck.DEFAULT_API_PORT}
    assert ports == {name: service.port for name, service in SERVICES.items()}
