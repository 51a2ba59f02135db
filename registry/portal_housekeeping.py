"""The sweeper's borrower-side chores: forget dead codes, counters, sessions and messages.

Nothing here is needed for correctness (every check also looks at expiry times); it keeps the
tables small and makes sure nothing personal (sealed messages) outlives its use.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from registry import borrower_sessions, notify, signin
from registry.settings import Settings


@dataclass(frozen=True)
class Chores:
    codes_and_counters: int
    sessions: int
    notifications: int

    def __str__(self) -> str:
        return (
            f"sign-in codes/counters purged={self.codes_and_counters}; "
            f"borrower sessions ended={self.sessions}; notifications purged={self.notifications}"
        )


def sweep(sessions: sessionmaker[Session], settings: Settings, now: dt.datetime) -> Chores:
    """One transaction; idempotent and safe beside another sweep (deletes only)."""
    timeouts = borrower_sessions.Timeouts(
        idle=dt.timedelta(seconds=settings.session_idle_seconds),
        absolute=dt.timedelta(seconds=settings.session_max_seconds),
    )
    with sessions() as session, session.begin():
        return Chores(
            codes_and_counters=signin.purge(session, now),
            sessions=borrower_sessions.purge(session, now, timeouts),
            notifications=notify.purge(session, now),
        )
