"""`python -m services.notifier`: the notifier, configured by the environment."""

from services.notifier.service import main
from services.runner import run_service
from shared.config import Settings

run_service(lambda: main(Settings.from_env("notifier")))
