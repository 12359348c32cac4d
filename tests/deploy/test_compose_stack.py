"""docker-compose.yml run as local processes: each default service's command (the image's
entrypoint and CMD from the Dockerfile, or the compose command) with its environment, host
names mapped to 127.0.0.1 and free ports; a real clip replayed by capture reaches the api."""

import httpx
import yaml
from conftest import CLIP, Stack
from deploy_helpers import REPO, compose_env, ports_in, soundhive_services


def test_replayed_clip_gives_an_event_at_the_api(stack: Stack, dog_event: dict):
    assert CLIP.name in dog_event["source"]
    assert dog_event["model"] == "yamnet"
    assert 0 < dog_event["score"] <= 1
    assert dog_event["start"] >= 0
    # The api's other views agree: the source is listed.
    sources = httpx.get(stack.url("api", 8000) + "/sources", timeout=5).json()
    assert CLIP.name in str(sources)
    assert "hum.wav" in str(sources)  # both sources of SOUNDHIVE_CAPTURE_SOURCES were captured


def test_every_healthcheck_passed_and_services_stayed_up(stack: Stack, dog_event: dict):
    for name, service in stack.services.items():
        assert 0 in service.health_seen, name
        assert service.process.poll() is None, f"{name} died:\n{stack.logs()}"
        assert service.healthy_now(), name


def test_api_readiness_and_redis_persistence(stack: Stack):
    assert httpx.get(stack.url("api", 8000) + "/readyz", timeout=5).status_code == 200
    import redis

    config = redis.Redis.from_url(stack.redis_url).config_get("appendonly")
    assert config["appendonly"] == "yes"  # the compose file's Redis command keeps an AOF


def test_prometheus_scrapes_every_service():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for group in jobs["soundhive"]["static_configs"] for t in group["targets"]}
    expected = {f"{name}:{port}" for name, service in soundhive_services(compose).items()
                for port in ports_in(service)}
    assert targets == expected
    optional = {t for group in jobs["soundhive-optional"]["static_configs"]
                for t in group["targets"]}
    for target in optional:
        name, port = target.split(":")
        service = compose["services"][name]
        assert service.get("profiles"), name
        assert compose_env(service).get("SOUNDHIVE_METRICS_PORT") == port
