"""`soundhive models list|pull`, downloading from a real HTTP server on loopback."""

import hashlib
import json
from dataclasses import replace

from pipeline_helpers import free_port
from typer.testing import CliRunner

from shared.models import catalog
from soundhive.cli import app

runner = CliRunner()


def serve_model(monkeypatch, base_url: str, files: dict[str, bytes], checksums: dict[str, str]):
    spec = catalog.ModelSpec(
        name="tiny",
        description="a test model",
        files=tuple(
            catalog.ModelFile(name, f"{base_url}/{name}", checksums.get(name)) for name in files
        ),
        has_audioset_head=False,
    )
    monkeypatch.setitem(catalog.MODELS, "tiny", spec)
    return spec


def test_pull_downloads_and_verifies(http_folder, tmp_path, monkeypatch):
    served, url = http_folder
    files = {"weights.bin": b"\x01" * 300_000, "labels.csv": b"index,mid,display_name\n"}
    for name, data in files.items():
        (served / name).write_bytes(data)
    serve_model(
        monkeypatch, url, files, {"weights.bin": hashlib.sha256(files["weights.bin"]).hexdigest()}
    )
    target = tmp_path / "models"
    monkeypatch.setenv("SOUNDHIVE_MODELS", str(target))
    result = runner.invoke(app, ["models", "pull", "tiny"])
    assert result.exit_code == 0, result.output
    assert (target / "weights.bin").read_bytes() == files["weights.bin"]
    assert "sha256 verified" in result.output
    again = runner.invoke(app, ["models", "pull", "tiny"])
    assert "weights.bin: present" in again.output


def test_pull_rejects_a_bad_checksum_and_keeps_nothing(http_folder, tmp_path, monkeypatch):
    served, url = http_folder
    (served / "weights.bin").write_bytes(b"tampered")
    serve_model(monkeypatch, url, {"weights.bin": b""}, {"weights.bin": "0" * 64})
    target = tmp_path / "models"
    monkeypatch.setenv("SOUNDHIVE_MODELS", str(target))
    result = runner.invoke(app, ["models", "pull", "tiny"])
    assert result.exit_code == 2 and "checksum mismatch" in result.output
    assert list(target.iterdir()) == []


def test_pull_offline_fails_clearly(tmp_path, monkeypatch):
    closed = f"http://127.0.0.1:{free_port()}"  # a port nothing listens on
    serve_model(monkeypatch, closed, {"weights.bin": b""}, {})
    monkeypatch.setenv("SOUNDHIVE_MODELS", str(tmp_path))
    result = runner.invoke(app, ["models", "pull", "tiny"])
    assert result.exit_code == 2 and "cannot download" in result.output
    assert "\n" not in result.output.strip(), result.output  # the error, no leftover bar


def test_pull_unknown_model():
    result = runner.invoke(app, ["models", "pull", "nope"])
    assert result.exit_code == 2 and "unknown model" in result.output


def test_list_shows_ready_and_missing(models_dir, tmp_path, monkeypatch):
    result = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    yamnet_row = next(line for line in result.output.splitlines() if "yamnet" in line)
    assert "ready" in yamnet_row
    monkeypatch.setenv("SOUNDHIVE_MODELS", str(tmp_path))
    result = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert "yamnet.tflite missing" in result.output
    rows = [json.loads(line) for line in runner.invoke(app, ["models", "list", "--json"]).output
            .splitlines()]
    yamnet = next(row for row in rows if row["name"] == "yamnet")
    assert not yamnet["ready"] and yamnet["problems"]["yamnet.tflite"] == "missing"


def test_official_sources_have_pinned_checksums_where_published():
    yamnet = catalog.MODELS["yamnet"]
    assert all(f.sha256 for f in yamnet.files)
    assert replace(yamnet.files[0]).url.startswith("https://")
