"""Fixtures of the notifier tests (redis_server and services come from tests/conftest.py): a
real Mosquitto, an MQTT subscriber, a webhook receiver, the DeviceHive stub and an attacker's
catcher server."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from devicehive_stub import DeviceHiveStub
from notifier_helpers import Catcher, Mosquitto, MqttCollector
from pipeline_helpers import wait_for


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    folder = tmp_path / "mosquitto"
    folder.mkdir()
    broker = Mosquitto(folder)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mqtt_collector(mosquitto: Mosquitto) -> Iterator[MqttCollector]:
    collector = MqttCollector(mosquitto.port)
    wait_for(collector.client.is_connected, 10, "the test's MQTT subscriber")
    yield collector
    collector.stop()


@pytest.fixture
def stub() -> Iterator[DeviceHiveStub]:
    stub = DeviceHiveStub()
    stub.start()
    yield stub
    stub.stop()


@pytest.fixture
def catcher() -> Iterator[Catcher]:
    server = Catcher()
    yield server
    server.stop()
