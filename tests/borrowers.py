"""Helpers for the borrower-facing tests: records seeded through the real intake."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from factories import Member, envelope, national_id, payload
from registry.intake import Intake
from registry.models import Institution
from registry.national_id import validate
from registry.policy import Policy
from registry.secrets import KeyMaterial


def index_of(material: KeyMaterial, nid: str) -> bytes:
    """The borrower's blind index, computed the way the registry does."""
    return material.blind_index.digest("national_id", validate(nid))


def seed(
    session: Session,
    material: KeyMaterial,
    member: Member,
    *,
    serial: int = 1,
    account_ref: str = "CARD-0001-4321",
    phone: str = "+8613800138000",
    name: str = "张三",
    now: dt.datetime | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Submit one open report for borrower ``serial`` through the intake; returns the payload."""
    doc = payload(member, account_ref=account_ref, **overrides)
    doc["borrower"] = {
        **doc["borrower"],
        "national_id": national_id(serial),
        "phone": phone,
        "name": name,
    }
    institution = session.scalar(select(Institution).where(Institution.code == member.code))
    assert institution is not None
    Intake(material, Policy()).submit(
        session, institution, envelope(member, doc), now or dt.datetime.now(dt.UTC)
    )
    return doc
