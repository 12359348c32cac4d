"""The recorder service (see service.py)."""
