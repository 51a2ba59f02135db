"""What the operator reads: the inquiry log, members' conduct, aggregates. No identities."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry import members
from registry.models import Delinquency, Inquiry, Institution, QuotaUsage, Tombstone


def inquiry_log(
    session: Session, *, outcome: str | None, institution: str | None, limit: int
) -> list[dict[str, Any]]:
    query = select(Inquiry, Institution.code).join(Institution)
    if outcome is not None:
        query = query.where(Inquiry.outcome == outcome)
    if institution is not None:
        query = query.where(Institution.code == institution)
    rows = session.execute(
        query.order_by(Inquiry.created_at.desc(), Inquiry.id.desc()).limit(limit)
    )
    return [
        {
            "inquiry_id": inquiry.ref,
            "institution": code,
            "purpose": inquiry.purpose,
            "basis": inquiry.consent_kind,
            "outcome": inquiry.outcome,
            "refusal_code": inquiry.refusal_code,
            "created_at": inquiry.created_at,
        }
        for inquiry, code in rows
    ]


def member_summaries(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    today = now.astimezone(dt.UTC).date()
    used = {
        member_id: n
        for member_id, n in session.execute(
            select(QuotaUsage.institution_id, QuotaUsage.used).where(QuotaUsage.day == today)
        )
    }
    refused = {
        member_id: n
        for member_id, n in session.execute(
            select(Inquiry.institution_id, func.count())
            .where(Inquiry.outcome == "refused")
            .group_by(Inquiry.institution_id)
        )
    }
    return [
        {
            "code": member.code,
            "name": member.name,
            "status": member.status,
            "cap_violations": members.violations_by_rule(session, member),
            "inquiries_today": int(used.get(member.id, 0)),
            "refused_inquiries": int(refused.get(member.id, 0)),
        }
        for member, _ in members.list_members(session)
    ]


def _counts(session: Session, column: Any, *where: Any) -> dict[str, int]:
    rows = session.execute(select(column, func.count()).where(*where).group_by(column))
    return {str(key): int(n) for key, n in rows}


def statistics(session: Session) -> dict[str, Any]:
    return {
        "open_records": int(
            session.scalar(
                select(func.count()).select_from(Delinquency).where(Delinquency.status == "open")
            )
            or 0
        ),
        "records_by_classification": _counts(session, Delinquency.classification),
        "cleared_by_reason": _counts(session, Tombstone.reason),
        "inquiries_by_purpose": _counts(session, Inquiry.purpose, Inquiry.outcome == "answered"),
        "refused_inquiries": int(
            session.scalar(
                select(func.count()).select_from(Inquiry).where(Inquiry.outcome == "refused")
            )
            or 0
        ),
    }
