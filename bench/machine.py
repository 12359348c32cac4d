"""Where the benchmarks find the repo and the public clips; the machine and the commit a
benchmark ran on, for its report (figures differ between machines and commits)."""

import platform
import subprocess
from pathlib import Path

from shared.config import usable_cpus

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO.parent / "shared" / "data" / "clips"  # the public test clips beside the repo


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


def git_commit() -> str | None:
    """The commit measured, with "-dirty" when the work tree differs from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")
