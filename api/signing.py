"""Deny by default: every member route requires a valid RFC 9421 request signature."""

from __future__ import annotations

from flask import g, request

from api.services import db, services
from registry.authn import Caller, authenticate


def target_uri() -> str:
    """The URI the member signed: the public base URL when configured (behind a proxy)."""
    base = services().settings.public_base_url
    if base:
        query = request.query_string.decode("latin-1")
        return base.rstrip("/") + request.path + (f"?{query}" if query else "")
    return request.url


def require_member() -> None:
    """``before_request`` hook of member blueprints: authenticate, remember the nonce, commit."""
    svc = services()
    session = db()
    body = request.get_data(cache=True)
    try:
        g.caller = authenticate(
            session,
            svc.settings,
            method=request.method,
            url=target_uri(),
            headers=dict(request.headers.items()),
            body=body,
            now=svc.clock(),
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise


def caller() -> Caller:
    member: Caller = g.caller
    return member
