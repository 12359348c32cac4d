"""`python -m services.features`: the features service, configured by the environment
(services/features/settings.py)."""

from services.runner import serve

serve("features")
