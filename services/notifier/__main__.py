"""`python -m services.notifier`: the notifier service, configured by the environment
(services/notifier/settings.py)."""

from services.runner import serve

serve("notifier")
