"""The capture service's settings."""

import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from services.capture.sources import SOURCE_FORMS
from shared.config import Settings, internal_field, metrics_port_field, secret_field

T = TypeVar("T")


class CaptureSettings(Settings):
    """Capture: which sources, how fast files are replayed, and where captured audio is kept."""

    service: str = internal_field(default="capture")
    metrics_port: int = metrics_port_field(9101)
    # A secret: URLs may carry passwords (never echoed in errors; also from a _FILE).
    sources: Annotated[tuple[str, ...], NoDecode] = secret_field(
        (), f"The sources, space-separated (or a JSON list): {SOURCE_FORMS}", flag="--source",
        validation_alias="SOUNDHIVE_CAPTURE_SOURCES")
    fast: bool = Field(False, validation_alias="SOUNDHIVE_CAPTURE_FAST",
                       description="Replay files as fast as the pipeline takes them "
                       "(default: in real time).")
    hub: bool = Field(True, validation_alias="SOUNDHIVE_CAPTURE_HUB",
                      description="Read HTTP(S) MP3 and AAC streams many to a thread (other "
                      "URLs, and these with --fast or a proxy set, get a thread each through "
                      "FFmpeg); off: every network source in a thread of its own.")
    save_path: Path | None = Field(None, validation_alias="SOUNDHIVE_CAPTURE_SAVE_PATH",
                                   description="Keep the captured audio here (WAV files).")
    part: str = Field("0/1", validation_alias="SOUNDHIVE_CAPTURE_PART", pattern=r"^\d+/\d+$",
                      description="Read only part I/N of the sources (the sources, a folder's "
                      "files each counted, cut into N shares in order): a process's source "
                      "threads thrash on the GIL past ~50 network streams that FFmpeg reads "
                      "(the hub's streams: ~300 a process), so `up` runs one capture process "
                      "per 32 sources this way.")

    @field_validator("sources", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_sources(value) if isinstance(value, str) else value

    @field_validator("sources")
    @classmethod
    def _some(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("capture needs at least one source (--source)")
        return value

    @field_validator("part")
    @classmethod
    def _part(cls, value: str) -> str:
        index, count = map(int, value.split("/"))
        if not 0 <= index < count:
            raise ValueError(f"part {value}: I/N with 0 <= I < N")
        return value

    def share(self, specs: list[T]) -> list[T]:
        """This process's share of the parsed sources (`part`)."""
        index, count = map(int, self.part.split("/"))
        return specs[index * len(specs) // count:(index + 1) * len(specs) // count]


def split_sources(text: str) -> list[str]:
    """SOUNDHIVE_CAPTURE_SOURCES's (and its file's) text: space-separated, or a JSON list of
    strings; ValueError (naming no source) otherwise."""
    if not text.lstrip().startswith("["):
        return text.split()
    try:
        sources = json.loads(text)
    except ValueError:
        raise ValueError("the sources are not a valid JSON list") from None
    if not (isinstance(sources, list) and all(isinstance(s, str) for s in sources)):
        raise ValueError("the sources are not a JSON list of strings")
    return sources
