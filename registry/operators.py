"""Operator accounts: registered and revoked only from the registry host's command line."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto import ed25519
from registry.errors import Conflict, NotFound, ValidationFailed
from registry.models import MemberKey, Operator

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")


def add(session: Session, name: str, public_key_pem: bytes, now: dt.datetime) -> Operator:
    """Register an operator and its Ed25519 key; a key is either a member's or an operator's."""
    if not _NAME.fullmatch(name):
        raise ValidationFailed("operator name must be 2-64 characters of a-z 0-9 . _ -")
    try:
        raw = ed25519.public_key_from_pem(public_key_pem)
    except Exception:
        raise ValidationFailed("the file is not an Ed25519 public key in PEM form") from None
    keyid = ed25519.key_id(raw)
    taken = session.scalar(select(Operator).where(Operator.name == name))
    if taken is not None:
        raise Conflict(f"operator {name} already exists")
    reused = session.scalar(select(Operator.id).where(Operator.keyid == keyid)) or session.scalar(
        select(MemberKey.id).where(MemberKey.keyid == keyid)
    )
    if reused is not None:
        raise Conflict(f"key {keyid} is already registered")
    operator = Operator(name=name, keyid=keyid, public_key=raw, created_at=now)
    session.add(operator)
    session.flush()
    return operator


def list_operators(session: Session) -> list[Operator]:
    return list(session.scalars(select(Operator).order_by(Operator.name)))


def revoke(session: Session, name: str, now: dt.datetime) -> Operator:
    operator = session.scalar(select(Operator).where(Operator.name == name))
    if operator is None:
        raise NotFound(f"no operator {name}")
    operator.revoked_at = now
    return operator
