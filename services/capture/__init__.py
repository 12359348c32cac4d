"""The capture service (see service.py and sources.py)."""
