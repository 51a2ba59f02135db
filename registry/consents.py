"""Consent: a borrower's permission for one member to look at their file for a credit application.

A consent code is issued by the borrower (portal or ``/v1/me/``) for one named member, shown to
the borrower once and stored only as a keyed hash, so a stolen database cannot replay it. A
written authorization is attested by the member: its reference, the SHA-256 of the signed form
and the date it was signed; it becomes a consent row too, so the borrower sees it in their list.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.errors import FieldError, Forbidden, NotFound, ValidationFailed
from registry.models import Consent, Institution
from registry.policy import Policy
from registry.secrets import KeyMaterial

CREDIT_APPLICATION = "credit_application"
KIND_CODE = "consent_code"
KIND_WRITTEN = "written_authorization"

# No 0/O, 1/I/L: a borrower reads the code to a loan officer over the phone.
_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
_CODE_LENGTH = 12
_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def normalize_code(code: str) -> str:
    """Upper case, without the spaces and hyphens people type between groups."""
    return re.sub(r"[\s-]", "", code).upper()


def _format(raw: str) -> str:
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def _hash(material: KeyMaterial, code: str) -> bytes:
    return material.blind_index.digest("consent_code", normalize_code(code))


def issue_code(
    session: Session,
    material: KeyMaterial,
    policy: Policy,
    *,
    borrower_index: bytes,
    institution_code: str,
    expires_at: dt.datetime,
    now: dt.datetime,
) -> tuple[Consent, str]:
    """Create a consent code for one member; returns the row and the code (shown once)."""
    # NOTE: a code with a NUL cannot exist, and PostgreSQL refuses NUL in text outright.
    member = (
        None
        if "\x00" in institution_code
        else session.scalar(select(Institution).where(Institution.code == institution_code))
    )
    if member is None or not member.is_active:
        raise ValidationFailed(
            "no active member with that code",
            errors=[FieldError("institution", "active_member", "must name an active member")],
        )
    longest = now + dt.timedelta(days=policy.consent_code_max_days)
    if not now < expires_at <= longest:
        raise ValidationFailed(
            "the expiry is out of range",
            errors=[
                FieldError(
                    "expires_at",
                    "consent_expiry_range",
                    f"must be in the future and at most {policy.consent_code_max_days} days away",
                )
            ],
        )
    code = "".join(secrets.choice(_ALPHABET) for _ in range(_CODE_LENGTH))
    consent = Consent(
        ref=secrets.token_hex(16),
        borrower_index=borrower_index,
        institution_id=member.id,
        purpose=CREDIT_APPLICATION,
        kind=KIND_CODE,
        code_hash=_hash(material, code),
        issued_at=now,
        expires_at=expires_at,
    )
    session.add(consent)
    session.flush()
    return consent, _format(code)


def redeem_code(
    session: Session,
    material: KeyMaterial,
    *,
    code: str,
    institution_id: int,
    borrower_index: bytes,
    now: dt.datetime,
) -> Consent:
    """The live consent behind ``code`` for this member and borrower, or a refusal.

    Every mismatch (unknown, another member's, another borrower's, expired, revoked) gives the
    same answer, so a code cannot be probed for whom it belongs to.
    """
    consent = session.scalar(select(Consent).where(Consent.code_hash == _hash(material, code)))
    if (
        consent is None
        or consent.institution_id != institution_id
        or consent.borrower_index != borrower_index
        or not consent.is_live(now)
    ):
        raise Forbidden(
            "the consent code is not a live consent of this borrower for this member",
            code="consent_invalid",
            errors=[
                FieldError(
                    "consent.code",
                    "live_consent",
                    "must be a consent code the borrower issued to the calling member, "
                    "neither expired nor revoked",
                )
            ],
        )
    return consent


def attest_written(
    session: Session,
    policy: Policy,
    *,
    institution_id: int,
    borrower_index: bytes,
    reference: str,
    form_sha256: str,
    signed_on: dt.date,
    now: dt.datetime,
) -> Consent:
    """Record a written authorization the member attests to; valid for the policy's period."""
    errors = []
    if not _REFERENCE.fullmatch(reference):
        errors.append(
            FieldError("consent.reference", "reference_format", "1-64 characters A-Z a-z 0-9 ._:/-")
        )
    if not _SHA256_HEX.fullmatch(form_sha256):
        errors.append(
            FieldError("consent.form_sha256", "sha256_hex", "64 lower-case hexadecimal characters")
        )
    oldest = now.date() - dt.timedelta(days=policy.written_authorization_valid_days)
    if not oldest <= signed_on <= now.date():
        errors.append(
            FieldError(
                "consent.signed_on",
                "authorization_date_range",
                "must not be in the future nor older than "
                f"{policy.written_authorization_valid_days} days",
            )
        )
    if errors:
        raise ValidationFailed("the written authorization is not acceptable", errors=errors)
    expires = dt.datetime.combine(
        signed_on + dt.timedelta(days=policy.written_authorization_valid_days),
        dt.time(),
        tzinfo=dt.UTC,
    )
    consent = Consent(
        ref=secrets.token_hex(16),
        borrower_index=borrower_index,
        institution_id=institution_id,
        purpose=CREDIT_APPLICATION,
        kind=KIND_WRITTEN,
        reference=reference,
        form_sha256=form_sha256,
        signed_on=signed_on,
        issued_at=now,
        expires_at=expires,
    )
    session.add(consent)
    session.flush()
    return consent


def revoke(session: Session, *, borrower_index: bytes, consent_ref: str, now: dt.datetime) -> None:
    """The borrower withdraws a consent; another borrower's is indistinguishable from none."""
    consent = session.scalar(
        select(Consent).where(Consent.ref == consent_ref, Consent.borrower_index == borrower_index)
    )
    if consent is None:
        raise NotFound("no such consent", code="consent_not_found")
    if consent.revoked_at is None:
        consent.revoked_at = now


def list_for_borrower(session: Session, borrower_index: bytes) -> list[Consent]:
    return list(
        session.scalars(
            select(Consent)
            .where(Consent.borrower_index == borrower_index)
            .order_by(Consent.issued_at.desc())
        )
    )
