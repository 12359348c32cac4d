"""The classifier service (see service.py)."""
