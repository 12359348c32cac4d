"""`python -m services.api`: the api service, configured by the environment."""

from services.api.service import main
from services.api.settings import ApiSettings
from services.runner import run_service

run_service(lambda: main(ApiSettings.from_env()))
