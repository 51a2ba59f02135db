"""Borrower sign-in: a one-time code to the phone on file, or an enrolment code from the operator.

The answer to "send me a code" is the same whether the ID is known or not, and so is the work
behind it: a code is made, hashed, stored and queued to ``notify`` in both cases (the outbox
records that an unknown ID had no destination). Codes are kept only as keyed hashes bound to
the borrower's blind index, live ``CODE_TTL``, and die after ``MAX_ATTEMPTS`` wrong guesses.
Requests and guesses are rate-limited per ID and per client address (``signin_limits``).
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from registry import notify, signin_limits
from registry.errors import FieldError, ValidationFailed
from registry.models import BorrowerEnrolment, SigninCode
from registry.national_id import InvalidNationalId, validate
from registry.secrets import KeyMaterial
from registry.vault import Vault

SMS = "sms"
ENROLMENT = "enrolment"
CODE_TTL = dt.timedelta(minutes=10)
ENROLMENT_TTL = dt.timedelta(days=3)
MAX_ATTEMPTS = 5
SMS_DIGITS = 6
# No 0/O, 1/I/L: the operator reads the enrolment code out or hands it over on paper.
_ENROLMENT_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
_ENROLMENT_LENGTH = 12
_PHONE = re.compile(r"\+?[0-9]{6,15}")


def borrower_index(material: KeyMaterial, national_id: str) -> bytes:
    """The blind index of a typed national ID, or a 422 naming the GB 11643 rule it breaks.

    A malformed number reveals nothing about the registry's contents, so saying so is safe.
    """
    try:
        normalized = validate(national_id)
    except InvalidNationalId as exc:
        raise ValidationFailed(
            "the national ID is not valid",
            errors=[FieldError("national_id", exc.rule, exc.message)],
        ) from None
    return material.blind_index.digest("national_id", normalized)


def normalize_code(code: str) -> str:
    """Upper case without the spaces and hyphens people type between groups."""
    return re.sub(r"[\s-]", "", code).upper()


def _hash(material: KeyMaterial, index: bytes, code: str) -> bytes:
    # NOTE: bound to the borrower's index, so a code row cannot be matched to another person,
    # and keyed, so a copy of the database cannot be brute-forced offline (10^6 codes).
    return material.blind_index.digest("signin_code", f"{index.hex()}\x00{normalize_code(code)}")


def request_code(
    session: Session,
    material: KeyMaterial,
    *,
    national_id: str,
    client: str,
    now: dt.datetime,
) -> None:
    """Make a code and queue it to the phone on file; identical work for unknown IDs.

    Raises ``RateLimited`` when the ID or the client asked too often, ``ValidationFailed``
    for a malformed ID; otherwise the caller answers "if the ID is known, a code was sent".
    """
    index = borrower_index(material, national_id)
    signin_limits.hit(session, material, signin_limits.CODES_PER_CLIENT, client, now)
    signin_limits.hit(session, material, signin_limits.CODES_PER_ID, index.hex(), now)
    session.execute(
        delete(SigninCode).where(SigninCode.borrower_index == index, SigninCode.expires_at <= now)
    )
    code = f"{secrets.randbelow(10**SMS_DIGITS):0{SMS_DIGITS}d}"
    session.add(
        SigninCode(
            borrower_index=index,
            kind=SMS,
            code_hash=_hash(material, index, code),
            attempts=0,
            created_at=now,
            expires_at=now + CODE_TTL,
        )
    )
    notify.to_borrower(
        session,
        material,
        borrower_index=index,
        template="signin_code",
        params={"code": code},
        now=now,
    )


def verify(
    session: Session,
    material: KeyMaterial,
    *,
    national_id: str,
    code: str,
    client: str,
    now: dt.datetime,
) -> bytes | None:
    """The borrower's index when ``code`` is one of their live codes, else None.

    A wrong guess counts against every live code of that ID, so the guesses per ID are
    bounded whatever the number of codes requested. The caller must COMMIT after a None too:
    the counted attempt is the protection. Raises ``RateLimited`` past the client's limit.
    """
    index = borrower_index(material, national_id)
    signin_limits.hit(session, material, signin_limits.VERIFICATIONS_PER_CLIENT, client, now)
    guess = _hash(material, index, code)
    live = list(
        session.scalars(
            select(SigninCode)
            .where(
                SigninCode.borrower_index == index,
                SigninCode.spent_at.is_(None),
                SigninCode.expires_at > now,
                SigninCode.attempts < MAX_ATTEMPTS,
            )
            .with_for_update()
        )
    )
    matched = [row for row in live if hmac.compare_digest(row.code_hash, guess)]
    if matched:
        for row in live:
            if row.kind == SMS or row in matched:
                row.spent_at = now
        session.flush()
        return index
    for row in live:
        row.attempts += 1
    session.flush()
    return None


def enrol(
    session: Session,
    material: KeyMaterial,
    *,
    national_id: str,
    phone: str | None,
    now: dt.datetime,
) -> str:
    """After an identity check in person: an enrolment code (returned once) and the phone given.

    The code signs the borrower in like an SMS code, for ``ENROLMENT_TTL``. A phone given here
    is where later codes go, before any phone a member reported.
    """
    index = borrower_index(material, national_id)
    if phone is not None and not _PHONE.fullmatch(phone):
        raise ValidationFailed(
            "the phone number is not valid",
            errors=[FieldError("phone", "format", "6-15 digits, optionally after a +")],
        )
    vault = Vault(material.keyring)
    enrolment = session.scalar(
        select(BorrowerEnrolment).where(BorrowerEnrolment.borrower_index == index)
    )
    if enrolment is None:
        data_key, key = vault.new_key(session, now)
        enrolment = BorrowerEnrolment(
            ref=secrets.token_hex(16), borrower_index=index, data_key=data_key, enrolled_at=now
        )
        session.add(enrolment)
    else:
        key = vault.open_key(enrolment.data_key)
        enrolment.enrolled_at = now
    if phone is not None:
        enrolment.phone_ct = vault.seal(
            key, "borrower_enrolments", "phone", enrolment.ref, phone.encode()
        )
    raw = "".join(secrets.choice(_ENROLMENT_ALPHABET) for _ in range(_ENROLMENT_LENGTH))
    session.add(
        SigninCode(
            borrower_index=index,
            kind=ENROLMENT,
            code_hash=_hash(material, index, raw),
            attempts=0,
            created_at=now,
            expires_at=now + ENROLMENT_TTL,
        )
    )
    session.flush()
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def purge(session: Session, now: dt.datetime) -> int:
    """Forget expired and used codes (their hashes are worthless by then) and old counters."""
    done = session.execute(
        delete(SigninCode).where((SigninCode.expires_at <= now) | SigninCode.spent_at.isnot(None))
    )
    return int(getattr(done, "rowcount", 0) or 0) + signin_limits.purge(session, now)
