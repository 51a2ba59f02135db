"""Rate limits on borrower sign-in, counted in the database so every worker and host share them.

Fixed windows per (scope, subject). The subject (a borrower's blind index, a client address) is
stored only as a keyed hash: the table reveals neither who signs in nor from where.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.errors import RateLimited
from registry.models import SigninCounter
from registry.secrets import KeyMaterial


@dataclass(frozen=True)
class Limit:
    """At most ``maximum`` events per ``window`` for one subject; ``why`` is the harm prevented."""

    scope: str
    maximum: int
    window: dt.timedelta
    why: str


HOUR = dt.timedelta(hours=1)

CODES_PER_ID = Limit(
    "code_request_id",
    5,
    HOUR,
    "Bounds the SMS sent to one person (harassment, cost) and, with five guesses per code, "
    "the guesses at one person's codes to 25 an hour.",
)
CODES_PER_CLIENT = Limit(
    "code_request_client",
    20,
    HOUR,
    "One client cannot make the registry text many people or enumerate IDs by timing.",
)
VERIFICATIONS_PER_CLIENT = Limit(
    "verify_client",
    30,
    HOUR,
    "One client cannot spread code guesses over many IDs.",
)
LONGEST_WINDOW = max(
    limit.window for limit in (CODES_PER_ID, CODES_PER_CLIENT, VERIFICATIONS_PER_CLIENT)
)


def _subject(material: KeyMaterial, limit: Limit, subject: str) -> bytes:
    return material.blind_index.digest("signin_limit", f"{limit.scope}\x00{subject}")


def _locked(session: Session, scope: str, subject: bytes) -> SigninCounter | None:
    return session.scalar(
        select(SigninCounter)
        .where(SigninCounter.scope == scope, SigninCounter.subject == subject)
        .with_for_update()
    )


def hit(
    session: Session, material: KeyMaterial, limit: Limit, subject: str, now: dt.datetime
) -> None:
    """Count one event for ``subject``, or raise ``RateLimited`` once the window is full.

    The row is locked (``FOR UPDATE`` on PostgreSQL; SQLite's write lock is taken by the
    transaction itself), so concurrent requests in several workers count exactly.
    """
    key = _subject(material, limit, subject)
    counter = _locked(session, limit.scope, key)
    if counter is None:
        try:
            with session.begin_nested():
                session.add(
                    SigninCounter(scope=limit.scope, subject=key, window_start=now, count=0)
                )
        except IntegrityError:
            pass  # another worker created it first; lock theirs
        counter = _locked(session, limit.scope, key)
        assert counter is not None
    if counter.window_start + limit.window <= now:
        counter.window_start, counter.count = now, 0
    if counter.count >= limit.maximum:
        wait = (counter.window_start + limit.window - now).total_seconds()
        raise RateLimited(
            "too many sign-in attempts; try again later",
            retry_after=max(1, math.ceil(wait)),
        )
    counter.count += 1
    session.flush()


def purge(session: Session, now: dt.datetime) -> int:
    """Forget counters whose window ended."""
    done = session.execute(
        delete(SigninCounter).where(SigninCounter.window_start <= now - LONGEST_WINDOW)
    )
    return int(getattr(done, "rowcount", 0) or 0)
