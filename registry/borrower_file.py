"""The borrower's own file, assembled from every part of the registry, and its signed download.

Everything here is selected by the signed-in borrower's blind index and nothing else, so no
function can return another person's data. Fields pass through ``masking.present`` with the
borrower as viewer (they see their own data whole); the borrower also sees what inquirers do
not: suppressed records, contact data, refused consents' history.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto import dsse
from registry import consents, disputes, statements
from registry.clearing import CERTIFICATE_PAYLOAD_TYPE, Clearer
from registry.masking import Viewer, present
from registry.models import Borrower, Consent, Delinquency, Inquiry, Institution
from registry.policy import Policy
from registry.records import record_fields
from registry.secrets import KeyMaterial
from registry.vault import Vault

FILE_PAYLOAD_TYPE = "application/vnd.delinquency-registry.borrower-file+json;version=1"


def stamp(when: dt.datetime | None) -> str | None:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def national_id(session: Session, material: KeyMaterial, borrower_index: bytes) -> str | None:
    """The borrower's own ID as the registry holds it (None once every record is cleared)."""
    borrower = session.scalar(select(Borrower).where(Borrower.id_index == borrower_index))
    if borrower is None:
        return None
    vault = Vault(material.keyring)
    key = vault.open_key(borrower.data_key)
    return vault.unseal(
        key, "borrowers", "national_id", borrower.ref, borrower.national_id_ct
    ).decode()


def records(session: Session, material: KeyMaterial, borrower_index: bytes) -> list[dict[str, Any]]:
    """Every record about the borrower, whole, with dispute, statement and suppression state."""
    rows = list(
        session.scalars(
            select(Delinquency)
            .join(Borrower, Borrower.id == Delinquency.borrower_id)
            .where(Borrower.id_index == borrower_index)
            .order_by(Delinquency.first_delinquency_date, Delinquency.id)
        )
    )
    ids = [r.id for r in rows]
    disputed = disputes.open_dispute_record_ids(session, ids)
    _, said = statements.statements_for_inquiry(session, material, borrower_index, ids)
    vault = Vault(material.keyring)
    out = []
    for record in rows:
        fields = record_fields(vault, record, with_contact=True)
        fields["under_dispute"] = record.id in disputed
        fields["statement"] = said.get(record.id)
        # Suppression is the registry's own state: the borrower is told inquirers no longer
        # see the record.
        fields["suppressed"] = record.suppressed_at is not None
        fields["institution_name"] = record.institution.name
        out.append(present(Viewer.BORROWER, fields))
    return out


def inquiries(session: Session, borrower_index: bytes) -> list[dict[str, Any]]:
    """Who looked at the file and why: the answered inquiries, newest first."""
    rows = session.scalars(
        select(Inquiry)
        .where(Inquiry.borrower_index == borrower_index, Inquiry.outcome == "answered")
        .order_by(Inquiry.created_at.desc(), Inquiry.id.desc())
    )
    return [
        {
            "inquiry_id": row.ref,
            "institution": row.institution.code,
            "institution_name": row.institution.name,
            "date": stamp(row.created_at),
            "purpose": row.purpose,
            "consent_kind": row.consent_kind,
        }
        for row in rows
    ]


def _consent_state(consent: Consent, now: dt.datetime) -> str:
    if consent.revoked_at is not None:
        return "revoked"
    return "live" if consent.is_live(now) else "expired"


def consent_view(session: Session, consent: Consent, now: dt.datetime) -> dict[str, Any]:
    """One consent and the inquiries that used it ("where it was used")."""
    used = session.scalars(
        select(Inquiry)
        .where(Inquiry.consent_id == consent.id, Inquiry.outcome == "answered")
        .order_by(Inquiry.created_at)
    )
    return {
        "consent_id": consent.ref,
        "institution": consent.institution.code,
        "institution_name": consent.institution.name,
        "purpose": consent.purpose,
        "kind": consent.kind,
        "issued_at": stamp(consent.issued_at),
        "expires_at": stamp(consent.expires_at),
        "revoked_at": stamp(consent.revoked_at),
        "state": _consent_state(consent, now),
        "used_by": [
            {"inquiry_id": i.ref, "institution": i.institution.code, "date": stamp(i.created_at)}
            for i in used
        ],
    }


def consent_list(session: Session, borrower_index: bytes, now: dt.datetime) -> list[dict[str, Any]]:
    return [
        consent_view(session, c, now) for c in consents.list_for_borrower(session, borrower_index)
    ]


def institutions(session: Session) -> list[dict[str, str]]:
    """The active members a borrower may name in a consent (codes and names are public)."""
    rows = session.scalars(
        select(Institution).where(Institution.status == "active").order_by(Institution.name)
    )
    return [{"code": row.code, "name": row.name} for row in rows]


def certificates(
    session: Session, material: KeyMaterial, policy: Policy, borrower_index: bytes
) -> list[dict[str, Any]]:
    """The clearance certificates kept for the borrower: the signed envelope and what it says."""
    out = []
    for signed in Clearer(material, policy).certificates_for(session, borrower_index):
        envelope = dsse.parse_envelope(signed)
        assert envelope.payload_type == CERTIFICATE_PAYLOAD_TYPE
        out.append({"certificate": json.loads(envelope.payload), "envelope": json.loads(signed)})
    return out


def document(
    session: Session,
    material: KeyMaterial,
    policy: Policy,
    borrower_index: bytes,
    now: dt.datetime,
) -> dict[str, Any]:
    """The whole file as one JSON-ready document (what the signed download carries)."""
    return {
        "version": 1,
        "generated_at": stamp(now),
        "national_id": national_id(session, material, borrower_index),
        "records": records(session, material, borrower_index),
        "inquiries": inquiries(session, borrower_index),
        "disputes": disputes.list_for_borrower(session, material, borrower_index),
        "consents": consent_list(session, borrower_index, now),
        "statements": statements.list_for_borrower(session, material, borrower_index),
        "certificates": [
            c["certificate"] for c in certificates(session, material, policy, borrower_index)
        ],
    }


def signed_file(
    session: Session,
    material: KeyMaterial,
    policy: Policy,
    borrower_index: bytes,
    now: dt.datetime,
) -> bytes:
    """The file as a DSSE envelope signed by the registry's key: proof of what it held, when."""
    body = json.dumps(
        document(session, material, policy, borrower_index, now),
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return dsse.sign_envelope(FILE_PAYLOAD_TYPE, body, material.signing_key, material.signing_keyid)
