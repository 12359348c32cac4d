"""Writing a trained head: the folder shared/models/trained.py reads (its docstring gives the
layout), exported or installed as `$SOUNDHIVE_MODELS/heads/<name>/`. A head is written into a
temporary sibling folder and swapped in with renames, so a reader sees the old head or the new
one.
"""

import json
import os
import re
import shutil
import time
from pathlib import Path

from shared.models.frame_models import FrameModel
from shared.models.trained import CLASS_NAMES_FILE, FORMAT, HEAD_FILE, WEIGHTS_FILE, heads_dir

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def export_head(
    model: FrameModel,
    folder: Path,
    name: str,
    embedding_model: str,
    class_names: list[str],
    window: int,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write the head into `folder`, replacing what was there."""
    config = model.config
    if len(class_names) != config.num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a head of {config.num_classes} classes"
        )
    if not 1 <= window <= config.max_frames:
        raise ValueError(f"window {window} must be in 1..{config.max_frames} (max_frames)")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    model.save_weights(staging / WEIGHTS_FILE)
    (staging / CLASS_NAMES_FILE).write_text(
        "".join(f"{n}\n" for n in class_names), encoding="utf-8"
    )
    description = {
        "format": FORMAT,
        "name": name,
        "embedding_model": embedding_model,
        "window": window,
        "config": config.as_dict(),
        "metrics": metrics or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (staging / HEAD_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    _swap_in(staging, folder)
    return folder


def _swap_in(staging: Path, folder: Path) -> None:
    if not folder.exists():
        staging.rename(folder)
        return
    retired = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    folder.rename(retired)
    staging.rename(folder)
    shutil.rmtree(retired, ignore_errors=True)


def install_head(folder: Path, name: str) -> Path:
    """Copy an exported head into `$SOUNDHIVE_MODELS/heads/<name>/` (atomically replaced)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"head name {name!r} must be letters, digits, '_', '.' or '-'")
    target = heads_dir() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging)
    description = json.loads((staging / HEAD_FILE).read_text(encoding="utf-8"))
    description["name"] = name
    (staging / HEAD_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    _swap_in(staging, target)
    return target
