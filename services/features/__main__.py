"""`python -m services.features`: one features worker, configured by the environment."""

from services.features.service import main
from shared.config import Settings, run_service

run_service(lambda: main(Settings.from_env("features")))
