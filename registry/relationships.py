"""Whether a member has a reason to see a borrower: its own record, or the borrower's consent.

Used by inquiries (``account_review``, ``collection``) and by early-warning subscriptions, so the
two can never disagree about who may watch whom.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from registry.models import Borrower, Consent, Delinquency


def has_own_record(session: Session, institution_id: int, borrower_index: bytes) -> bool:
    """The member reported a record on this borrower that is still held (open or settled)."""
    query = select(
        exists()
        .where(Delinquency.institution_id == institution_id)
        .where(Delinquency.borrower_id == Borrower.id)
        .where(Borrower.id_index == borrower_index)
    )
    return bool(session.scalar(query))


def has_open_delinquency(session: Session, institution_id: int, borrower_index: bytes) -> bool:
    """The member holds an open (not settled) delinquency on this borrower."""
    query = select(
        exists()
        .where(Delinquency.institution_id == institution_id)
        .where(Delinquency.status == "open")
        .where(Delinquency.borrower_id == Borrower.id)
        .where(Borrower.id_index == borrower_index)
    )
    return bool(session.scalar(query))


def live_consent(
    session: Session, institution_id: int, borrower_index: bytes, now: dt.datetime
) -> Consent | None:
    """The newest consent of this borrower to this member that is neither expired nor revoked."""
    return session.scalar(
        select(Consent)
        .where(
            Consent.institution_id == institution_id,
            Consent.borrower_index == borrower_index,
            Consent.revoked_at.is_(None),
            Consent.expires_at > now,
        )
        .order_by(Consent.issued_at.desc())
        .limit(1)
    )


def has_relationship(
    session: Session, institution_id: int, borrower_index: bytes, now: dt.datetime
) -> bool:
    """Own record or live consent: what ``account_review`` and subscriptions require."""
    return has_own_record(session, institution_id, borrower_index) or (
        live_consent(session, institution_id, borrower_index, now) is not None
    )
