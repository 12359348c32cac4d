"""The classifier service's settings."""

from pathlib import Path

from pydantic import Field

from shared.config import Settings, internal_field, metrics_port_field, model_field


class ClassifierSettings(Settings):
    """Classifier: the scoring head, the event rules, and how long it waits for a late chunk."""

    service: str = internal_field(default="classifier")
    metrics_port: int = metrics_port_field(9103)
    model: str = model_field()
    head: str = Field("audioset", description="Scoring head: audioset, or a trained head's "
                      "name or folder.")
    events_config: Path | None = Field(None, description="JSON or YAML file of event rules "
                                       "(services/classifier/events.py).")
    reorder_timeout_s: float = Field(15.0, gt=0, description="How long the classifier waits "
                                     "for a source's missing chunk before it skips it, counted "
                                     "as lost.")
