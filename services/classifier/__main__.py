"""`python -m services.classifier`: one classifier worker, configured by the environment."""

from services.classifier.service import main
from services.runner import run_service
from shared.config import Settings

run_service(lambda: main(Settings.from_env("classifier")))
