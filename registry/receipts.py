"""Receipts: the registry's signed acknowledgement of an accepted report, the bank's proof."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto import dsse, ed25519
from registry.errors import NotFound
from registry.models import Institution, Report
from registry.secrets import KeyMaterial

RECEIPT_PAYLOAD_TYPE = "application/vnd.delinquency-registry.receipt+json;version=1"


def receipt_payload(
    *, report: Report, institution: Institution, accepted_at: dt.datetime, log_index: int | None
) -> dict[str, Any]:
    """What the registry signs. ``log_index`` is None for a report that cleared its record."""
    return receipt_document(
        report_id=report.report_id,
        institution=institution.code,
        envelope_sha256=report.envelope_sha256,
        sequence=report.sequence,
        kind=report.kind,
        accepted_at=accepted_at,
        log_index=log_index,
    )


def receipt_document(
    *,
    report_id: str,
    institution: str,
    envelope_sha256: str,
    sequence: int,
    kind: str,
    accepted_at: dt.datetime,
    log_index: int | None,
) -> dict[str, Any]:
    """The receipt's payload from plain values (batch intake has no ORM rows to pass)."""
    return {
        "version": 1,
        "report_id": report_id,
        "institution": institution,
        "envelope_sha256": envelope_sha256,
        "sequence": sequence,
        "log_index": log_index,
        "kind": kind,
        "accepted_at": accepted_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def sign_receipt(material: KeyMaterial, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return dsse.sign_envelope(
        RECEIPT_PAYLOAD_TYPE, body, material.signing_key, material.signing_keyid
    )


def find(session: Session, institution: Institution, report_id: str) -> bytes:
    """A member's own receipt again; another member's report id is indistinguishable from none."""
    receipt = session.scalar(
        select(Report.receipt).where(
            Report.institution_id == institution.id, Report.report_id == report_id
        )
    )
    if receipt is None:
        raise NotFound("no receipt for that report id from this member", code="receipt_not_found")
    return receipt


def published_keys(material: KeyMaterial) -> list[dict[str, str]]:
    """The registry's public keys, for anyone verifying a receipt offline."""
    raw = ed25519.public_key_raw(material.signing_key)
    return [
        {
            "keyid": material.signing_keyid,
            "algorithm": "ed25519",
            "public_key": base64.b64encode(raw).decode(),
            "public_key_pem": ed25519.public_key_to_pem(raw).decode(),
            "use": "receipts",
        }
    ]
