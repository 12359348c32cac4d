"""`soundhive datasets pull audioset`: offline failure, checksum check and unpacking, against a
real HTTP server on loopback."""

import hashlib
import io
import tarfile

from pipeline_helpers import free_port
from typer.testing import CliRunner

from soundhive.cli import app

runner = CliRunner()


def tiny_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        payload = b"not really a tfrecord"
        info = tarfile.TarInfo("audioset_v1_embeddings/eval/00.tfrecord")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def test_offline_is_a_one_line_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/features.tar.gz"
    result = runner.invoke(app, ["datasets", "pull", "audioset", "--out", str(tmp_path),
                                 "--url", url])
    assert result.exit_code == 2
    assert "cannot download" in result.output and "offline" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list((tmp_path / "audioset").glob("*"))


def test_checksum_verified_then_unpacked(http_folder, tmp_path):
    folder, base = http_folder
    archive = tiny_archive()
    (folder / "features.tar.gz").write_bytes(archive)
    result = runner.invoke(app, ["datasets", "pull", "audioset", "--out", str(tmp_path / "d"),
                                 "--url", f"{base}/features.tar.gz",
                                 "--sha256", hashlib.sha256(archive).hexdigest()])
    assert result.exit_code == 0, result.output
    assert "sha256 verified" in result.output
    assert (tmp_path / "d/audioset/audioset_v1_embeddings/eval/00.tfrecord").is_file()


def test_checksum_mismatch_keeps_nothing(http_folder, tmp_path):
    folder, base = http_folder
    (folder / "features.tar.gz").write_bytes(tiny_archive())
    # the default checksum is the real release's, which this file does not have
    result = runner.invoke(app, ["datasets", "pull", "audioset", "--out", str(tmp_path),
                                 "--url", f"{base}/features.tar.gz"])
    assert result.exit_code == 2 and "checksum mismatch" in result.output
    assert not list((tmp_path / "audioset").glob("*"))


def test_unknown_dataset():
    result = runner.invoke(app, ["datasets", "pull", "fsd50k"])
    assert result.exit_code == 2 and "unknown data set 'fsd50k'" in result.output
