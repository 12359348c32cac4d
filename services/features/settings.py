"""The features service's settings."""

import os

from pydantic import Field

from shared.config import Settings, internal_field, metrics_port_field, model_field, usable_cpus


class FeaturesSettings(Settings):
    """Features: which embedding model, and how many inference threads."""

    service: str = internal_field(default="features")
    metrics_port: int = metrics_port_field(9102)
    model: str = model_field()
    threads: int = Field(default_factory=usable_cpus, ge=1, description=(
        "Inference threads of each features worker, one LiteRT interpreter each (default: the "
        "cores this process may use; with several replicas on one host, divide them among "
        "replicas)."))

    @classmethod
    def threads_set(cls) -> int | None:
        """SOUNDHIVE_THREADS where the environment sets it (else each launcher divides the
        cores among the features replicas it starts)."""
        return cls().threads if cls.env_name("threads") in os.environ else None
