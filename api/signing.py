"""Deny by default: member and operator routes require a valid RFC 9421 request signature.

Each audience's blueprint installs its own hook (``require_member`` or ``require_operator``) as
``before_request``, so a route added to a blueprint is protected before its view is written.
"""

from __future__ import annotations

from flask import g, request

from api.services import db, services
from registry.authn import Caller, authenticate, authenticate_operator
from registry.models import Operator


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


def require_operator() -> None:
    """``before_request`` hook of operator blueprints: only an operator's key is accepted."""
    svc = services()
    session = db()
    body = request.get_data(cache=True)
    try:
        g.operator = authenticate_operator(
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


def operator() -> Operator:
    who: Operator = g.operator
    return who


def caller() -> Caller:
    member: Caller = g.caller
    return member
