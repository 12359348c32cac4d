"""`python -m services.classifier`: the classifier service, configured by the environment
(services/classifier/settings.py)."""

from services.runner import serve

serve("classifier")
