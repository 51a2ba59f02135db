"""Deny by default: member and operator routes require a valid RFC 9421 request signature.

Each audience's blueprint installs its own hook (``require_member`` or ``require_operator``) as
``before_request``, so a route added to a blueprint is protected before its view is written.

The hook writes the request's nonce in the request's transaction, which the view then commits
with its work; a view marked :func:`prepares_before_writing` has it written by its first
``db()`` instead. :func:`settle_nonce` (installed by ``create_app`` after every request, and
again at teardown) records the nonce on its own when that work was rolled back or never
committed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

from flask import Response, current_app, g, request
from sqlalchemy.orm import Session

from api.services import request_session, services
from registry import authn
from registry.authn import Caller, authenticate, authenticate_operator
from registry.errors import RegistryError
from registry.models import Operator

T = TypeVar("T")


def target_uri() -> str:
    """The URI the member signed: the public base URL when configured (behind a proxy)."""
    base = services().settings.public_base_url
    if base:
        query = request.query_string.decode("latin-1")
        return base.rstrip("/") + request.path + (f"?{query}" if query else "")
    return request.url


V = TypeVar("V", bound=type)

_PREPARES = "prepares_before_writing"


def prepares_before_writing(view_class: V) -> V:
    """Mark a view that does CPU work (verifying, validating) before its first ``db()``.

    Its request's nonce is written by that first ``db()`` instead of right after
    authentication, and on SQLite authentication reads without the write lock, so the
    view's preparation runs while other requests write. The view must not change anything
    before calling ``db()``; a replay is refused there.
    """
    setattr(view_class, _PREPARES, True)
    return view_class


def _view_prepares() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(getattr(view, "view_class", None), _PREPARES, False))


def _verified(authenticator: Callable[..., T]) -> T:
    """Run ``authenticator`` over this request, then write its nonce (or leave it to the view)."""
    svc = services()
    session = request_session()
    prepares = _view_prepares()
    try:
        who = authenticator(
            session,
            svc.settings,
            method=request.method,
            url=target_uri(),
            headers=dict(request.headers.items()),
            body=request.get_data(cache=True),
            now=svc.clock(),
            reading=prepares,
        )
        if not prepares:
            authn.write_nonce(session)
        return who
    except BaseException:
        session.rollback()
        raise


def settle_nonce(response: Response) -> Response:
    """``after_request``: the nonce is committed before the answer leaves, refusal or not.

    A failure to record it is not swallowed: the request then fails (500), as it did when
    the nonce was committed up front.
    """
    session = g.get("db")
    if session is not None:
        authn.settle_nonce(session)
    return response


def require_member() -> None:
    """``before_request`` hook of member blueprints: authenticate, remember the nonce.

    The member's key may come from this worker's ``KnownKeys``; writing the nonce confirms it
    is still valid (``registry.authn.write_nonce``), and so does :func:`confirm_caller`.
    """
    g.caller = _verified(partial(authenticate, known=services().known_keys))


def confirm_caller() -> None:
    """For a view that prepares before writing and refuses before its first ``db()``: make
    sure the caller's key and member are still valid before the refusal is answered."""
    authn.confirm_expected(request_session())


def refusal_for_caller() -> RegistryError | None:
    """The refusal a caller whose key was revoked (or member suspended) since this worker
    last read it gets instead of any other answer; None while it is valid. Only a request
    whose nonce is not written yet needs this (the nonce's statement checks the rest):
    every refusal goes through it (``api.errors``), so no view can forget it."""
    session: Session | None = g.get("db")
    if session is None:
        return None
    try:
        authn.confirm_expected(session)
    except RegistryError as refusal:
        return refusal
    return None


def require_operator() -> None:
    """``before_request`` hook of operator blueprints: only an operator's key is accepted."""
    g.operator = _verified(authenticate_operator)


def operator() -> Operator:
    who: Operator = g.operator
    return who


def caller() -> Caller:
    member: Caller = g.caller
    return member
