"""Whether a member has a reason to see a borrower: its own record, or the borrower's consent.

Used by inquiries (``account_review``, ``collection``) and by early-warning subscriptions, so the
two can never disagree about who may watch whom.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, Exists, exists, select
from sqlalchemy.orm import Session

from registry.models import Borrower, Consent, Delinquency


def own_record(
    institution_id: int | ColumnElement[Any], borrower_index: bytes | ColumnElement[Any]
) -> Exists:
    """The rule of ``has_own_record`` as an SQL condition, for a caller's larger statement.

    Values or bind parameters both work, so the condition can be part of a prebuilt statement.
    """
    return (
        exists()
        .where(Delinquency.institution_id == institution_id)
        .where(Delinquency.borrower_id == Borrower.id)
        .where(Borrower.id_index == borrower_index)
    )


def open_delinquency(
    institution_id: int | ColumnElement[Any], borrower_index: bytes | ColumnElement[Any]
) -> Exists:
    """The rule of ``has_open_delinquency`` as an SQL condition (see ``own_record``)."""
    return own_record(institution_id, borrower_index).where(Delinquency.status == "open")


def has_own_record(session: Session, institution_id: int, borrower_index: bytes) -> bool:
    """The member reported a record on this borrower that is still held (open or settled)."""
    return bool(session.scalar(select(own_record(institution_id, borrower_index))))


def has_open_delinquency(session: Session, institution_id: int, borrower_index: bytes) -> bool:
    """The member holds an open (not settled) delinquency on this borrower."""
    return bool(session.scalar(select(open_delinquency(institution_id, borrower_index))))


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
