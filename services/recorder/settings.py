"""The recorder service's settings."""

from pathlib import Path

from pydantic import Field

from shared.clips import ClipFormat, Privacy, clips_dir_field, privacy_field
from shared.config import Settings, internal_field, metrics_port_field


class RecorderSettings(Settings):
    """Recorder: what each event's clip spans, its format, where clips go and how long they
    stay, and privacy."""

    service: str = internal_field(default="recorder")
    metrics_port: int = metrics_port_field(9105)
    clips_dir: Path = clips_dir_field()
    clips_format: ClipFormat = Field("opus", description="Clip format: opus (Ogg Opus, about "
                                     "4 KB a second) or flac (lossless, about 25 KB a second).")
    clips_pre_roll_s: float = Field(2.0, ge=0, le=10, description="Seconds of audio kept "
                                    "before an event's start.")
    clips_post_roll_s: float = Field(2.0, ge=0, le=10, description="Seconds of audio kept "
                                     "after an event's end.")
    clips_max_event_s: float = Field(60.0, gt=0, le=300, description="A longer event's clip "
                                     "holds only its first this many seconds (plus the rolls).")
    clips_ring_s: float = Field(90.0, gt=0, le=600, description="Seconds of each source's "
                                "latest audio the recorder keeps in Redis (about 47 KB a "
                                "second, 4.2 MB per source at 90 s): at least pre roll + max "
                                "event + post roll + the pipeline's delay.")
    clips_max_age_days: float = Field(30.0, gt=0, description="Clips older than this are "
                                      "removed, oldest first.")
    clips_max_gb: float = Field(5.0, gt=0, description="Clips beyond this total size are "
                                "removed, oldest first.")
    clips_keep_per_label: int = Field(5, ge=0, description="Retention never removes a "
                                      "label's newest this many clips.")
    clips_min_free_mb: int = Field(200, ge=0, description="Below this much free space on the "
                                   "clips' disk, recording pauses (counted and logged as "
                                   "`disk full`); nothing else stops.")
    privacy: Privacy = privacy_field()
    privacy_threshold: float = Field(0.2, gt=0, le=1, validation_alias=(
        "SOUNDHIVE_PRIVACY_THRESHOLD"), description="SOUNDHIVE_PRIVACY=speech withholds a clip "
        "where Speech or a kind of it scores at least this in any of its chunks.")
