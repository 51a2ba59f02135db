"""Factories for rows and signed artefacts, so tests say only what matters to them."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask.testing import FlaskClient
from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Table,
    TypeDecorator,
)
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from crypto import dsse, ed25519, httpsig
from registry import members, operators
from registry.models import Money
from registry.national_id import check_character
from registry.payload import PAYLOAD_TYPE


def national_id(serial: int = 1, *, birth: str = "19900307", region: str = "110101") -> str:
    """A valid GB 11643 number; different ``serial`` values give different people."""
    first17 = f"{region}{birth}{serial % 1000:03d}"
    return first17 + check_character(first17)


@dataclass
class Member:
    code: str
    key: Ed25519PrivateKey
    keyid: str


def new_key() -> tuple[Ed25519PrivateKey, str]:
    key = ed25519.generate_private_key()
    return key, ed25519.key_id(ed25519.public_key_raw(key))


def admit(
    session: Session,
    code: str = "BANKA",
    *,
    now: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Member:
    when = now or dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    members.admit(session, code, f"{code} Bank", when)
    key, keyid = new_key()
    pem = ed25519.public_key_to_pem(ed25519.public_key_raw(key))
    members.add_key(session, code, pem, when, not_before=not_before, not_after=not_after)
    session.commit()
    return Member(code=code, key=key, keyid=keyid)


def payload(member: Member | str = "BANKA", **overrides: Any) -> dict[str, Any]:
    """A valid version-1 open report; overrides replace top-level fields."""
    code = member.code if isinstance(member, Member) else member
    today = dt.datetime.now(dt.UTC).date()
    doc: dict[str, Any] = {
        "version": 1,
        "report_id": f"r-{secrets.token_hex(8)}",
        "institution": code,
        "account_ref": "CARD-0001-4321",
        "sequence": 1,
        "kind": "open",
        "borrower": {
            "national_id": national_id(1),
            "name": "张三",
            "phone": "+8613800138000",
            "address": "北京市东城区长安街1号",
        },
        "product": "credit_card",
        "currency": "CNY",
        "overdue_principal": "10000.00",
        "overdue_interest": "150.00",
        "penalty": "100.00",
        "days_past_due": 30,
        "first_delinquency_date": (today - dt.timedelta(days=29)).isoformat(),
        "as_of_date": today.isoformat(),
        "contact": {"status": "reachable"},
        "collection_stage": "reminder",
    }
    doc.update(overrides)
    return doc


def report_of_kind(
    member: Member | str,
    *,
    account_ref: str,
    kind: str,
    sequence: int,
    borrower: int = 1,
    principal: str = "5000.00",
    days_past_due: int = 30,
    paid: str = "60.00",
) -> dict[str, Any]:
    """A valid report of any kind for one account, for tests that walk an account's life.

    ``open``, ``update`` and ``correct`` carry the account state (``borrower`` picks the
    national ID); ``payment``, ``settle`` and ``withdraw`` only what their kind needs.
    """
    today = dt.datetime.now(dt.UTC).date()
    if kind in ("open", "update", "correct"):
        doc = payload(
            member,
            account_ref=account_ref,
            kind=kind,
            sequence=sequence,
            days_past_due=days_past_due,
            overdue_principal=principal,
            overdue_interest="0.00",
            penalty="1.00",
            first_delinquency_date=(today - dt.timedelta(days=days_past_due - 1)).isoformat(),
            as_of_date=today.isoformat(),
        )
        doc["borrower"]["national_id"] = national_id(borrower)
        return doc
    head = payload(member, account_ref=account_ref)
    doc = {k: head[k] for k in ("version", "report_id", "institution", "account_ref")}
    doc.update(kind=kind, sequence=sequence)
    if kind == "payment":
        doc["payment"] = {"amount": paid, "date": today.isoformat()}
    elif kind == "settle":
        doc["settlement"] = {"type": "paid_in_full", "date": today.isoformat()}
    else:
        doc["withdrawal"] = {"reason": "reported_in_error"}
    return doc


def payload_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def envelope(
    member: Member,
    doc: dict[str, Any] | bytes,
    *,
    key: Ed25519PrivateKey | None = None,
    keyid: str | None = None,
    payload_type: str = PAYLOAD_TYPE,
) -> bytes:
    body = doc if isinstance(doc, bytes) else payload_bytes(doc)
    return dsse.sign_envelope(payload_type, body, key or member.key, keyid or member.keyid)


def signed(
    client: FlaskClient,
    member: Member,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    created: int | None = None,
    nonce: str | None = None,
    key: Ed25519PrivateKey | None = None,
    keyid: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> TestResponse:
    """Send a request signed the way a member's client signs it."""
    url = f"http://localhost{path}"
    headers = {"Content-Type": "application/json"} if body else {}
    headers.update(
        httpsig.sign_request(
            method=method,
            url=url,
            headers=headers,
            body=body,
            key=key or member.key,
            keyid=keyid or member.keyid,
            created=created if created is not None else int(time.time()),
            nonce=nonce or secrets.token_urlsafe(24),
        )
    )
    headers.update(extra_headers or {})
    return client.open(path, method=method, data=body, headers=headers)


def post_envelope(client: FlaskClient, member: Member, raw: bytes, **kw: Any) -> TestResponse:
    return signed(client, member, "POST", "/v1/reports", raw, **kw)


def submit(client: FlaskClient, member: Member, doc: dict[str, Any], **kw: Any) -> TestResponse:
    """Sign ``doc`` with the member's key and submit it."""
    return post_envelope(client, member, envelope(member, doc), **kw)


def make_operator(session: Session, name: str = "ops-alice") -> Member:
    """An operator; signs requests like a member, with a key only the operator API accepts."""
    key, keyid = new_key()
    pem = ed25519.public_key_to_pem(ed25519.public_key_raw(key))
    operators.add(session, name, pem, dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    session.commit()
    return Member(code=name, key=key, keyid=keyid)


def inquire(client: FlaskClient, member: Member, body: dict[str, Any], **kw: Any) -> TestResponse:
    """A signed inquiry; the national ID travels in the body."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    return signed(client, member, "POST", "/v1/inquiries", raw, **kw)


def problem_of(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    """Assert an RFC 9457 problem with this status and code, and return its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json()
    assert body["status"] == status and body["code"] == code
    assert body["type"].endswith(code) and body["title"] and body["detail"]
    return body


def field_rules(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["field"], e["rule"]) for e in body.get("errors", [])}


FILLER_NOW = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)


def filler_row(
    table: Table, refs: dict[str, int], serial: int, *, now: dt.datetime = FILLER_NOW
) -> dict[str, Any]:
    """A row of ``table`` with every required column set: references from ``refs`` by the
    referred table's name, anything else a plain value of the column's type."""
    row: dict[str, Any] = {}
    for column in table.columns:
        if column.primary_key or (column.nullable and not column.foreign_keys):
            continue
        referred = {fk.column.table.name for fk in column.foreign_keys}
        if referred:
            [name] = referred
            if name in refs:
                row[column.name] = refs[name]
            continue
        kind = column.type
        if isinstance(kind, Money):
            row[column.name] = Decimal(0)
            continue
        if isinstance(kind, TypeDecorator):
            kind = kind.impl_instance
        if isinstance(kind, String):
            row[column.name] = f"t{serial}"[: kind.length or 32]
        elif isinstance(kind, LargeBinary):
            row[column.name] = serial.to_bytes(32, "big")
        elif isinstance(kind, DateTime):
            row[column.name] = now
        elif isinstance(kind, Date):
            row[column.name] = now.date()
        elif isinstance(kind, Integer | BigInteger):
            row[column.name] = 1
        else:
            assert isinstance(kind, Numeric), (table.name, column.name, kind)
            row[column.name] = Decimal(0)
    return row
