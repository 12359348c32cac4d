"""Settings: read from the environment as the models declare them (booleans, NAME_FILE secrets,
one-line errors), with the CLI's options mapped onto them; the features worker's default thread
count follows the cores this process may use."""

import os
import shutil
import subprocess
import sys

import pytest
import typer

from services.api.settings import ApiSettings
from services.features.settings import FeaturesSettings
from services.notifier.settings import NotifierSettings
from services.registry import SERVICES
from shared.config import ConfigError, ProcessSettings, SettingsModel, is_secret, usable_cpus
from soundhive import cli


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_threads_default_to_the_cpus_the_process_may_use_not_the_hosts():
    code = ("from services.features.settings import FeaturesSettings; "
            "print(FeaturesSettings().threads)")
    pinned = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code],
                            capture_output=True, text=True, check=True,
                            env={k: v for k, v in os.environ.items() if k != "SOUNDHIVE_THREADS"})
    assert pinned.stdout.strip() == "1"
    assert usable_cpus() >= 1


def test_threads_setting_overrides_and_is_checked(monkeypatch):
    monkeypatch.setenv("SOUNDHIVE_THREADS", "3")
    assert FeaturesSettings().threads == 3
    monkeypatch.setenv("SOUNDHIVE_THREADS", "0")
    with pytest.raises(ConfigError, match="SOUNDHIVE_THREADS"):
        FeaturesSettings()


def every_model() -> list[type[SettingsModel]]:
    models = [ProcessSettings, *(s.settings for s in SERVICES.values())]
    nested = [info.annotation for model in models for info in model.model_fields.values()
              if isinstance(info.annotation, type) and issubclass(info.annotation, SettingsModel)]
    return models + nested


@pytest.mark.parametrize("word", ["true", "yes", "on", "1", "TRUE"])
def test_booleans_are_read_as_pydantic_reads_them(monkeypatch, word):
    monkeypatch.setenv("SOUNDHIVE_API_READ_AUTH", word)
    assert ApiSettings().read_auth is True
    monkeypatch.setenv("SOUNDHIVE_MQTT_DISCOVERY", {"true": "false", "yes": "no", "on": "off",
                                                    "1": "0", "TRUE": "False"}[word])
    assert NotifierSettings().mqtt.discovery is False


def test_every_secret_can_come_from_a_file(monkeypatch, tmp_path):
    secrets = [(model, name) for model in every_model()
               for name, info in model.settings_fields().items() if is_secret(info)]
    assert len(secrets) >= 9  # Redis, the api token, DeviceHive's three, MQTT, webhooks, sources
    monkeypatch.setenv("SOUNDHIVE_CAPTURE_SOURCES", "mic")
    for model, name in secrets:
        scheme = "redis" if name.startswith("redis_url") else "http"
        path = tmp_path / model.env_name(name)
        path.write_text(f"{scheme}://from-a-file\n")
        with monkeypatch.context() as patch:
            patch.delenv(model.env_name(name), raising=False)  # capture's sources, set above
            patch.setenv(f"{model.env_name(name)}_FILE", str(path))
            assert f"{scheme}://from-a-file" in str(getattr(model(), name)), model.env_name(name)
            patch.setenv(model.env_name(name), f"{scheme}://from-the-environment")
            assert "from-the-environment" in str(getattr(model(), name))  # NAME wins


def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("SOUNDHIVE_BATCH_SIZE", "many")
    with pytest.raises(ConfigError, match=r"^SOUNDHIVE_BATCH_SIZE: .*'many'") as error:
        FeaturesSettings()
    assert "\n" not in str(error.value)
    monkeypatch.delenv("SOUNDHIVE_BATCH_SIZE")
    monkeypatch.setenv("SOUNDHIVE_API_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="SOUNDHIVE_API_TOKEN_FILE: cannot read"):
        ApiSettings()
    monkeypatch.delenv("SOUNDHIVE_API_TOKEN_FILE")
    monkeypatch.setenv("SOUNDHIVE_API_PORT", "eighty")
    with pytest.raises(ConfigError, match=r"^SOUNDHIVE_API_PORT: .*'eighty'"):
        ApiSettings()


@pytest.mark.parametrize("variable, value", [
    ("REDIS_URL", "redis://mic:s3cr/et@redis:6379/0"),  # an unencoded / in the password
    ("REDIS_URL", "http://redis:6379/0"),
    ("REDIS_URL", "redis://redis:port/0"),
    ("REDIS_URL", "redis://redis:6379/events"),  # redis-py would use database 0
    ("REDIS_URLS", "redis://a:6379/0, redis://mic:s3cr/et@b:6379/0"),
])
def test_a_bad_redis_url_is_one_line_that_never_shows_it(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"^{variable}: not a Redis URL") as error:
        FeaturesSettings()
    assert "\n" not in str(error.value) and "s3cr" not in str(error.value)


@pytest.mark.parametrize("url", ["redis://mic:pa%2Fss%40%25@redis:6379/0",
                                 "rediss://:secret@redis.example:6380/1",
                                 "unix:///run/redis/redis.sock?db=0", "redis://localhost"])
def test_redis_urls_redis_py_reads_are_accepted(monkeypatch, url):
    monkeypatch.setenv("REDIS_URL", url)
    assert FeaturesSettings().redis_url == url


def test_every_serve_option_is_a_setting_and_every_setting_but_secrets_an_option():
    serve = typer.main.get_command(cli.app).commands["serve"]
    for name, service in SERVICES.items():
        options = {p.name for p in serve.commands[name].params if p.name != "help"}
        fields = service.settings.settings_fields()
        assert options <= set(fields), options - set(fields)
        flagged = {f for f, info in fields.items() if not is_secret(info)} | {"redis_url"}
        assert flagged <= options, flagged - options


def test_serve_options_reach_the_service_settings():
    result = subprocess.run([sys.executable, "-m", "soundhive", "serve", "features",
                             "--threads", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: SOUNDHIVE_THREADS:")


def test_up_uses_the_redis_the_environment_names_even_from_a_file(monkeypatch, tmp_path):
    from soundhive.pipeline import _given_redis

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL_FILE", raising=False)
    assert _given_redis(None) is None  # an embedded one
    (tmp_path / "url").write_text("redis://:pw@redis.example:6379/0\n")
    monkeypatch.setenv("REDIS_URL_FILE", str(tmp_path / "url"))
    assert _given_redis(None) == "redis://:pw@redis.example:6379/0"
    assert _given_redis("redis://other:1/0") == "redis://other:1/0"


def test_a_bad_redis_url_option_of_up_is_one_line_naming_the_option():
    result = subprocess.run(
        [sys.executable, "-m", "soundhive", "up", "--redis-url", "redis://mic:s3cr/et@h:1/0"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: --redis-url: not a Redis URL") and "s3cr" not in line


def test_the_events_bound_below_the_history_is_refused(monkeypatch):
    monkeypatch.setenv("SOUNDHIVE_EVENTS_MAXLEN", "100")
    monkeypatch.setenv("SOUNDHIVE_EVENTS_BACKLOG_MAX", "50")
    with pytest.raises(ConfigError, match=r"SOUNDHIVE_EVENTS_BACKLOG_MAX .* below "
                                          r"SOUNDHIVE_EVENTS_MAXLEN") as error:
        FeaturesSettings()
    assert "\n" not in str(error.value)
