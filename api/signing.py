"""Deny by default: member and operator routes require a valid RFC 9421 request signature.

Each audience's blueprint installs its own hook (``require_member`` or ``require_operator``) as
``before_request``, so a route added to a blueprint is protected before its view is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import g, request

from api.services import db, services
from registry.authn import Caller, authenticate, authenticate_operator
from registry.models import Operator

T = TypeVar("T")


def target_uri() -> str:
    """The URI the member signed: the public base URL when configured (behind a proxy)."""
    base = services().settings.public_base_url
    if base:
        query = request.query_string.decode("latin-1")
        return base.rstrip("/") + request.path + (f"?{query}" if query else "")
    return request.url


def _verified(authenticator: Callable[..., T]) -> T:
    """Run ``authenticator`` over this request and commit its nonce, or roll back and raise."""
    svc = services()
    session = db()
    try:
        who = authenticator(
            session,
            svc.settings,
            method=request.method,
            url=target_uri(),
            headers=dict(request.headers.items()),
            body=request.get_data(cache=True),
            now=svc.clock(),
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return who


def require_member() -> None:
    """``before_request`` hook of member blueprints: authenticate, remember the nonce, commit."""
    g.caller = _verified(authenticate)


def require_operator() -> None:
    """``before_request`` hook of operator blueprints: only an operator's key is accepted."""
    g.operator = _verified(authenticate_operator)


def operator() -> Operator:
    who: Operator = g.operator
    return who


def caller() -> Caller:
    member: Caller = g.caller
    return member
