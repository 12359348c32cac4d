"""The api's routes, one router per concern; services/api/app.py includes them in this order."""
