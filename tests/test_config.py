"""Settings: the features worker's default thread count follows the cores this process may use."""

import os
import shutil
import subprocess
import sys

import pytest

from services.features.settings import FeaturesSettings
from shared.config import ConfigError, usable_cpus


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
