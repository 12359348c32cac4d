"""The features service (see service.py)."""
