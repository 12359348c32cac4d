"""The machine a benchmark ran on, for its report (figures differ between machines)."""

import platform
from pathlib import Path

from shared.config import usable_cpus


def describe() -> dict:
    return {"cpus": usable_cpus(), "cpu": _cpu_model(), "python": platform.python_version(),
            "platform": platform.platform()}


def _cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in info.splitlines()
             if line.startswith("model name")]
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    vnni = " with AVX512-VNNI" if "avx512_vnni" in flags else ""
    return (names[0] if names else platform.machine()) + vnni
