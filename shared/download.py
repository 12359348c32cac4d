"""Downloading published files: streamed to a temporary file, checksum-verified, then renamed."""

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from shared.errors import UserError

CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 30

# Called with (bytes so far, total bytes or None) while a download runs.
ProgressCallback = Callable[[int, int | None], None]


class DownloadError(UserError):
    """A download that failed; the message is one line fit for a user."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    target: Path,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Fetch url into target; the target only appears once the whole file is verified."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response,
            open(partial, "wb") as out,
        ):
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress:
                    progress(done, total)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot download {url}: {reason} (are you offline?)") from None
    if total is not None and done != total:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} stopped after {done} of {total} bytes")
    if sha256 and digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest.hexdigest()}"
        )
    os.replace(partial, target)
    return target
