"""`python -m services.capture`: the capture service, configured by the environment
(services/capture/settings.py)."""

from services.runner import serve

serve("capture")
