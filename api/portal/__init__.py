"""The borrower portal: server-rendered pages under ``/portal/`` (see docs/borrowers.md)."""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    from api.portal.views import blp

    app.register_blueprint(blp)
