"""What the borrower's API and portal share: the client's address, sessions, sending codes.

Deny by default: ``require_borrower`` is each borrower blueprint's ``before_request`` hook, so
a route added there needs a signed-in borrower before its view is written.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from flask import current_app, g, request

from api.services import services
from registry import notify
from registry.borrower_sessions import Timeouts
from registry.errors import NotAuthenticated

NOTIFIER = "notifier"


def timeouts() -> Timeouts:
    settings = services().settings
    return Timeouts(
        idle=timedelta(seconds=settings.session_idle_seconds),
        absolute=timedelta(seconds=settings.session_max_seconds),
    )


def client_address() -> str:
    """The client's address for rate limits: the socket's peer, unless proxies are trusted.

    NOTE: ``X-Forwarded-For`` is written by the client too; only the entries appended by the
    ``trusted_proxies`` proxies in front of us (counted from the right) can be believed.
    """
    trusted = services().settings.trusted_proxies
    if trusted > 0:
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        hops = [h for h in hops if h]
        if len(hops) >= trusted:
            return hops[-trusted]
    return request.remote_addr or "unknown"


def deliver_in_background() -> None:
    """Hand queued messages to the gateway after the commit, off the request's clock.

    NOTE: sending in the request would make a known ID's answer slower than an unknown
    one's (only known IDs have a phone to send to); a thread keeps both answers equally fast.
    ``registry worker`` retries whatever this misses.
    """
    notifier: notify.Notifier = current_app.extensions[NOTIFIER]
    if not notifier.delivers:
        return
    svc = services()
    threading.Thread(
        target=notify.deliver_pending,
        args=(svc.sessions, svc.material, notifier, svc.clock()),
        kwargs={"limit": 20},
        daemon=True,
    ).start()


def borrower_index() -> bytes:
    """The signed-in borrower (set by the blueprint's authentication hook)."""
    index: bytes | None = g.get("borrower_index")
    if index is None:
        raise NotAuthenticated("sign in first", code="borrower_not_signed_in")
    return index
