"""`soundhive datasets pull audioset`: offline failure, checksum check and unpacking, against a
real HTTP server on loopback."""

import hashlib
import http.server
import io
import socket
import tarfile
import threading

import pytest
from typer.testing import CliRunner

from soundhive.cli import app

runner = CliRunner()


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(folder), **kw
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def tiny_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        payload = b"not really a tfrecord"
        info = tarfile.TarInfo("audioset_v1_embeddings/eval/00.tfrecord")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_is_a_one_line_error(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/features.tar.gz"
    result = runner.invoke(app, ["datasets", "pull", "audioset", "--out", str(tmp_path),
                                 "--url", url])
    assert result.exit_code == 2
    assert "cannot download" in result.output and "offline" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list((tmp_path / "audioset").glob("*"))


def test_checksum_verified_then_unpacked(served, tmp_path):
    folder, base = served
    archive = tiny_archive()
    (folder / "features.tar.gz").write_bytes(archive)
    result = runner.invoke(app, ["datasets", "pull", "audioset", "--out", str(tmp_path / "d"),
                                 "--url", f"{base}/features.tar.gz",
                                 "--sha256", hashlib.sha256(archive).hexdigest()])
    assert result.exit_code == 0, result.output
    assert "sha256 verified" in result.output
    assert (tmp_path / "d/audioset/audioset_v1_embeddings/eval/00.tfrecord").is_file()


def test_checksum_mismatch_keeps_nothing(served, tmp_path):
    folder, base = served
    (folder / "features.tar.gz").write_bytes(tiny_archive())
    # the default checksum is the real release's, which this file does not have
    result = runner.invoke(app, ["datasets", "pull", "audioset", "--out", str(tmp_path),
                                 "--url", f"{base}/features.tar.gz"])
    assert result.exit_code == 2 and "checksum mismatch" in result.output
    assert not list((tmp_path / "audioset").glob("*"))


def test_unknown_dataset():
    result = runner.invoke(app, ["datasets", "pull", "fsd50k"])
    assert result.exit_code == 2 and "unknown data set 'fsd50k'" in result.output
