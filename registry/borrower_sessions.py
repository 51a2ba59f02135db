"""Signed-in borrowers: server-side sessions found by the hash of a random token.

The token (a browser cookie or an API bearer token) is 256 random bits, shown to the client
once; the database keeps only its SHA-256, so a copy of the table cannot be replayed. A session
dies after ``idle`` without use or ``absolute`` after sign-in, whichever comes first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from registry.models import BorrowerSession

BROWSER = "browser"
API = "api"


@dataclass(frozen=True)
class Timeouts:
    idle: dt.timedelta
    absolute: dt.timedelta


def _hash(token: str) -> bytes:
    # A 256-bit random token needs no salt or key: there is nothing to guess.
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def start(
    session: Session, *, borrower_index: bytes, kind: str, timeouts: Timeouts, now: dt.datetime
) -> str:
    """A new session (never one the client proposed: no fixation); returns its token."""
    token = secrets.token_urlsafe(32)
    session.add(
        BorrowerSession(
            token_hash=_hash(token),
            borrower_index=borrower_index,
            kind=kind,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timeouts.absolute,
        )
    )
    session.flush()
    return token


def resume(
    session: Session, *, token: str, kind: str, timeouts: Timeouts, now: dt.datetime
) -> BorrowerSession | None:
    """The live session behind ``token`` (touched), or None; a dead one is deleted."""
    if not token or len(token) > 128:
        return None
    found = session.scalar(
        select(BorrowerSession).where(BorrowerSession.token_hash == _hash(token))
    )
    if found is None or found.kind != kind:
        return None
    if found.expires_at <= now or found.last_seen_at + timeouts.idle <= now:
        session.delete(found)
        session.flush()
        return None
    found.last_seen_at = now
    session.flush()
    return found


def end(session: Session, *, token: str) -> None:
    """Sign out: the token is worthless from now on."""
    session.execute(delete(BorrowerSession).where(BorrowerSession.token_hash == _hash(token)))


def csrf_token(token: str) -> str:
    """The form token of a browser session: an HMAC keyed by the session token.

    Another site can make the browser send the cookie, but cannot read it, so it cannot
    compute this value; nothing needs storing.
    """
    return hmac.new(token.encode("ascii", "replace"), b"csrf-v1", hashlib.sha256).hexdigest()


def csrf_ok(token: str, submitted: str | None) -> bool:
    return submitted is not None and hmac.compare_digest(csrf_token(token), submitted)


def purge(session: Session, now: dt.datetime, timeouts: Timeouts) -> int:
    """Delete sessions past their absolute or idle timeout."""
    done = session.execute(
        delete(BorrowerSession).where(
            (BorrowerSession.expires_at <= now)
            | (BorrowerSession.last_seen_at <= now - timeouts.idle)
        )
    )
    return int(getattr(done, "rowcount", 0) or 0)
