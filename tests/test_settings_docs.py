"""Settings are documented where users look: docs/configuration.md and
deploy/compose.env.example are what the generator writes from the models, so a setting added
without regenerating them (or a hand edit) fails here."""

from pathlib import Path

import pytest

from services.registry import SERVICES
from shared.config import describe
from soundhive import settings_docs
from soundhive.settings_docs import GENERATED

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted(GENERATED, key=str), ids=str)
def test_generated_file_is_up_to_date(path):
    assert (REPO / path).read_text() == GENERATED[path](), (
        f"{path} is stale: run `python -m soundhive.settings_docs`")


def test_every_setting_of_every_service_is_documented():
    text = (REPO / settings_docs.CONFIGURATION_MD).read_text()
    example = (REPO / settings_docs.COMPOSE_ENV).read_text()
    for service in SERVICES.values():
        for item in describe(service.settings):
            assert f"`{item.env}`" in text and f"# {item.env}=" in example, item.env
