"""`python -m services.api`: the api service, configured by the environment
(services/api/settings.py)."""

from services.runner import serve

serve("api")
