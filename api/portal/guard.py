"""The portal's protections, in one place: session cookie, CSRF, language, response headers.

- The session cookie is ``Secure; HttpOnly; SameSite=Strict`` with the ``__Host-`` prefix
  (no Domain, Path=/), holding a random token whose hash finds the server-side session.
- Every POST carries a CSRF token in a form field: an HMAC keyed by the session token, or,
  before sign-in, by a random pre-session cookie (so the sign-in forms are protected too).
- Every response gets a Content-Security-Policy that allows no script at all and only the
  portal's own stylesheet, refuses framing, sends no referrer; personal pages are no-store.
"""

from __future__ import annotations

import secrets

from flask import Response, abort, g, request

from api.me.auth import timeouts
from api.portal import i18n
from api.services import db, services
from registry import borrower_sessions

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PUBLIC_ENDPOINTS = frozenset(
    {"portal.index", "portal.signin_request", "portal.verify", "portal.language", "portal.static"}
)


def _secure() -> bool:
    return services().settings.session_cookie_secure


def session_cookie_name() -> str:
    # NOTE: the __Host- prefix makes the browser refuse the cookie unless it is Secure, has
    # Path=/ and no Domain: a sibling subdomain cannot plant or overwrite it.
    return "__Host-portal" if _secure() else "portal"


def pre_cookie_name() -> str:
    return "__Host-portal-pre" if _secure() else "portal-pre"


def load() -> Response | None:
    """``before_request``: language, the signed-in borrower, the CSRF check, the login gate."""
    g.lang = i18n.negotiate(request.cookies.get(i18n.COOKIE), request.accept_languages)
    g.borrower_index = None
    g.session_token = None
    token = request.cookies.get(session_cookie_name())
    if token:
        svc = services()
        session = db()
        found = borrower_sessions.resume(
            session,
            token=token,
            kind=borrower_sessions.BROWSER,
            timeouts=timeouts(),
            now=svc.clock(),
        )
        session.commit()
        if found is not None:
            g.borrower_index = found.borrower_index
            g.session_token = token
    g.pre_token = request.cookies.get(pre_cookie_name()) or None
    g.new_pre_token = None
    if request.method == "POST" and request.endpoint == "portal.signout" and not g.session_token:
        return _redirect_to_signin()  # already signed out (idle timeout): nothing to protect
    if request.method == "POST":
        binding = g.session_token or g.pre_token
        if binding is None or not borrower_sessions.csrf_ok(binding, request.form.get("csrf")):
            abort(403, description="csrf")
    if g.borrower_index is None and request.endpoint not in PUBLIC_ENDPOINTS:
        if request.method == "GET":
            return _redirect_to_signin()
        abort(403, description="signed_out")
    return None


def _redirect_to_signin() -> Response:
    response = Response(status=303)
    response.headers["Location"] = "/portal/"
    return response


def csrf_field_value() -> str:
    """The CSRF token for forms on this page (makes a pre-session cookie when needed)."""
    binding = g.get("session_token") or g.get("pre_token") or g.get("new_pre_token")
    if binding is None:
        binding = g.new_pre_token = secrets.token_urlsafe(32)
    return borrower_sessions.csrf_token(binding)


def set_session_cookie(response: Response, token: str) -> None:
    response.set_cookie(
        session_cookie_name(),
        token,
        max_age=services().settings.session_max_seconds,
        path="/",
        secure=_secure(),
        httponly=True,
        samesite="Strict",
    )
    response.delete_cookie(pre_cookie_name(), path="/", secure=_secure(), samesite="Strict")


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(
        session_cookie_name(), path="/", secure=_secure(), httponly=True, samesite="Strict"
    )


def set_language_cookie(response: Response, lang: str) -> None:
    response.set_cookie(
        i18n.COOKIE,
        lang,
        max_age=365 * 24 * 3600,
        path="/",
        secure=_secure(),
        httponly=True,
        samesite="Lax",
    )


def finish(response: Response) -> Response:
    """``after_request``: headers on every portal response; the pre-session cookie if made."""
    if g.get("new_pre_token"):
        response.set_cookie(
            pre_cookie_name(),
            g.new_pre_token,
            path="/",
            secure=_secure(),
            httponly=True,
            samesite="Strict",
        )
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.endpoint != "portal.static":
        response.headers["Cache-Control"] = "no-store"
        response.headers["Vary"] = "Cookie, Accept-Language"
    return response
