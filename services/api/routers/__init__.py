"""The api's routes, one router per concern (events, stream, sources, config, classify,
health); services/api/app.py includes them."""
