"""The edge service (see service.py)."""
