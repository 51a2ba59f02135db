"""Borrowers' JSON API under ``/v1/me/`` (sign-in, then their own file)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from api.me.auth import NOTIFIER
from registry import notify


def register(app: Flask, api: Any) -> None:
    """Register the blueprints and the notifier (a bad notifier setting fails at start-up)."""
    from api.me.views import SECURITY_SCHEME, blp, signin_blp

    app.extensions[NOTIFIER] = notify.make_notifier(app.extensions["registry"].settings)
    api.spec.components.security_scheme("borrowerToken", SECURITY_SCHEME)
    api.register_blueprint(signin_blp)
    api.register_blueprint(blp)
