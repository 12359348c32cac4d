"""The notifier service: detection events to DeviceHive, MQTT (Home Assistant) and webhooks
(see service.py)."""
