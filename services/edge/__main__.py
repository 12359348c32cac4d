"""`python -m services.edge`: capture and features in one process, configured by the
environment (services/edge/settings.py)."""

from services.runner import serve

serve("edge")
