"""The edge service's settings: capture's and features' together."""

from services.capture.settings import CaptureSettings
from services.features.settings import FeaturesSettings
from shared.config import internal_field, metrics_port_field


class EdgeSettings(CaptureSettings, FeaturesSettings):
    """Edge: capture's sources and features' model in one process near the microphones,
    sending only embeddings to the cluster."""

    service: str = internal_field(default="edge")
    metrics_port: int = metrics_port_field(9106)
