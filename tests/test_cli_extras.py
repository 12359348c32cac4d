"""The CLI beside its optional extras: `devices --json` is JSON whatever the machine has, and
without the mic or TensorFlow extra a command says in one line which extra to install (the
module is hidden from a real `soundhive` process, as if not installed)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def soundhive(*args: str, hidden: str | None = None) -> subprocess.CompletedProcess:
    hide = f"sys.modules[{hidden!r}] = None; " if hidden else ""
    code = (f"import runpy, sys; {hide}sys.argv = ['soundhive', *{list(args)!r}]; "
            "runpy.run_module('soundhive', run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_devices_json_parses():
    pytest.importorskip("pyaudio", reason="the mic extra is not installed")
    result = soundhive("devices", "--json")
    assert result.returncode == 0, result.stderr
    devices = json.loads(result.stdout)  # [] on a machine without a microphone
    assert isinstance(devices, list)
    for device in devices:
        assert set(device) == {"index", "name", "channels", "rate"} and device["channels"] > 0


@pytest.mark.parametrize("args", [["devices", "--json"], ["devices"]])
def test_devices_without_the_mic_extra_is_one_line(args: list[str]):
    result = soundhive(*args, hidden="pyaudio")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: microphones need the mic extra, which this installation lacks: pip install "
        "'soundhive[mic]' (./scripts/install.sh installs it)"]


@pytest.mark.parametrize("args", [["train", "--train", "x", "--out", "run"],
                                  ["embed", ".", "--out", "out"],
                                  ["evaluate", "--head", "h", "--data", "d"]])
def test_training_without_tensorflow_is_one_line(args: list[str]):
    result = soundhive(*args, hidden="tensorflow")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: Training, embedding and evaluating need TensorFlow, which this installation "
        "lacks: pip install 'soundhive[tensorflow]' (./scripts/install.sh installs it)"]
