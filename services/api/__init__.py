"""The api service (see app.py)."""
