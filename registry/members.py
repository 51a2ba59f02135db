"""Operator actions on members and their keys: admit, suspend, reinstate; add, list, revoke keys."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crypto import ed25519
from registry.errors import Conflict, NotFound, ValidationFailed
from registry.models import ComplianceViolation, Institution, MemberKey, MemberStatus, Operator

_CODE = re.compile(r"[A-Z0-9][A-Z0-9_-]{1,31}")


def admit(session: Session, code: str, name: str, now: dt.datetime) -> Institution:
    if not _CODE.fullmatch(code):
        raise ValidationFailed("institution code must be 2-32 characters of A-Z 0-9 _ -")
    if not name.strip():
        raise ValidationFailed("institution name must not be empty")
    if session.scalar(select(Institution).where(Institution.code == code)) is not None:
        raise Conflict(f"member {code} already exists")
    member = Institution(code=code, name=name.strip(), created_at=now)
    session.add(member)
    session.flush()
    return member


def get(session: Session, code: str) -> Institution:
    member = session.scalar(select(Institution).where(Institution.code == code))
    if member is None:
        raise NotFound(f"no member with code {code}")
    return member


def list_members(session: Session) -> list[tuple[Institution, int]]:
    """Every member with its count of refused reports that broke a charging cap."""
    counts = (
        select(ComplianceViolation.institution_id, func.count().label("n"))
        .group_by(ComplianceViolation.institution_id)
        .subquery()
    )
    rows = session.execute(
        select(Institution, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.institution_id == Institution.id)
        .order_by(Institution.code)
    )
    return [(member, int(n)) for member, n in rows]


def violations_by_rule(session: Session, member: Institution) -> dict[str, int]:
    rows = session.execute(
        select(ComplianceViolation.rule, func.count())
        .where(ComplianceViolation.institution_id == member.id)
        .group_by(ComplianceViolation.rule)
    )
    return {rule: int(n) for rule, n in rows}


def suspend(session: Session, code: str, now: dt.datetime) -> Institution:
    member = get(session, code)
    member.status = MemberStatus.SUSPENDED.value
    member.suspended_at = now
    return member


def reinstate(session: Session, code: str) -> Institution:
    member = get(session, code)
    member.status = MemberStatus.ACTIVE.value
    member.suspended_at = None
    return member


def add_key(
    session: Session,
    code: str,
    public_key_pem: bytes,
    now: dt.datetime,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> MemberKey:
    """Register a member's Ed25519 public key; its key id is derived, never chosen."""
    member = get(session, code)
    try:
        raw = ed25519.public_key_from_pem(public_key_pem)
    except Exception:
        raise ValidationFailed("the file is not an Ed25519 public key in PEM form") from None
    start = not_before or now
    if not_after is not None and not_after <= start:
        raise ValidationFailed("not_after must be later than not_before")
    keyid = ed25519.key_id(raw)
    taken = session.scalar(select(MemberKey.id).where(MemberKey.keyid == keyid)) or session.scalar(
        select(Operator.id).where(Operator.keyid == keyid)
    )
    if taken is not None:
        raise Conflict(f"key {keyid} is already registered")
    key = MemberKey(
        institution_id=member.id,
        keyid=keyid,
        public_key=raw,
        not_before=start,
        not_after=not_after,
        created_at=now,
    )
    session.add(key)
    session.flush()
    return key


def list_keys(session: Session, code: str | None = None) -> list[MemberKey]:
    query = select(MemberKey).join(Institution).order_by(Institution.code, MemberKey.created_at)
    if code is not None:
        query = query.where(Institution.code == code)
    return list(session.scalars(query))


def revoke_key(
    session: Session, keyid: str, now: dt.datetime, *, at: dt.datetime | None = None
) -> MemberKey:
    """Revoke from ``at`` (default now); signatures checked after that instant are refused."""
    key = session.scalar(select(MemberKey).where(MemberKey.keyid == keyid))
    if key is None:
        raise NotFound(f"no key {keyid}")
    key.revoked_at = at or now
    return key
