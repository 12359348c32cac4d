"""`python -m services.recorder`: the recorder service, configured by the environment
(services/recorder/settings.py)."""

from services.runner import serve

serve("recorder")
