"""Endpoints for member institutions; every one requires a signed request (api/signing.py)."""
