"""Shared test fixtures: the real model folder and the real clips beside the repository."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    folder = Path(os.environ.get("SOUNDHIVE_MODELS") or SHARED / "models")
    if not (folder / "yamnet.tflite").is_file():
        pytest.fail(f"real models are needed: set SOUNDHIVE_MODELS (looked in {folder})")
    return folder


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    folder = SHARED / "data" / "clips"
    if not (folder / "labels.jsonl").is_file():
        pytest.fail(f"real clips are needed in {folder}")
    return folder


@pytest.fixture(autouse=True)
def _models_env(monkeypatch, models_dir):
    monkeypatch.setenv("SOUNDHIVE_MODELS", str(models_dir))
