"""`python -m services.features`: one features worker, configured by the environment."""

from services.features.service import main
from services.runner import run_service
from shared.config import Settings

run_service(lambda: main(Settings.from_env("features")))
