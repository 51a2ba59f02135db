"""Consent codes and written authorizations, as the domain keeps them."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy.orm import Session

from factories import admit
from registry import consents, members
from registry.errors import Forbidden, NotFound, ValidationFailed
from registry.models import Consent
from registry.policy import Policy
from registry.secrets import load_key_material
from registry.settings import Settings

NOW = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
ALICE, BOB = b"a" * 32, b"b" * 32


def issue(session: Session, settings: Settings, **kw: object) -> tuple[Consent, str]:
    args: dict[str, object] = {
        "borrower_index": ALICE,
        "institution_code": "LENDERB",
        "expires_at": NOW + dt.timedelta(days=7),
        "now": NOW,
    }
    args.update(kw)
    return consents.issue_code(
        session,
        load_key_material(settings),
        Policy(),
        **args,  # type: ignore[arg-type]
    )


def test_a_code_is_shown_once_and_stored_only_as_a_keyed_hash(
    session: Session, settings: Settings
) -> None:
    admit(session, "LENDERB")
    consent, code = issue(session, settings)
    assert re.fullmatch(r"[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}", code)
    assert consent.code_hash is not None and len(consent.code_hash) == 32
    stored = b"".join(str(v).encode() for v in vars(consent).values())
    assert code.replace("-", "").encode() not in stored and code.encode() not in stored
    lender = members.get(session, "LENDERB")
    material = load_key_material(settings)
    found = consents.redeem_code(
        session, material, code=code, institution_id=lender.id, borrower_index=ALICE, now=NOW
    )
    assert found.id == consent.id


def test_codes_differ_every_time(session: Session, settings: Settings) -> None:
    admit(session, "LENDERB")
    assert len({issue(session, settings)[1] for _ in range(20)}) == 20


@pytest.mark.parametrize("days", [0, -1, 31])
def test_the_expiry_must_be_within_the_policy(
    session: Session, settings: Settings, days: int
) -> None:
    admit(session, "LENDERB")
    with pytest.raises(ValidationFailed) as refused:
        issue(session, settings, expires_at=NOW + dt.timedelta(days=days))
    assert refused.value.errors[0].rule == "consent_expiry_range"


def test_only_an_active_member_can_be_given_a_code(session: Session, settings: Settings) -> None:
    with pytest.raises(ValidationFailed):
        issue(session, settings, institution_code="NOBODY")
    admit(session, "LENDERB")
    members.suspend(session, "LENDERB", NOW)
    with pytest.raises(ValidationFailed):
        issue(session, settings)


def test_revoking_is_only_for_the_borrower_who_gave_it(
    session: Session, settings: Settings
) -> None:
    admit(session, "LENDERB")
    consent, code = issue(session, settings)
    with pytest.raises(NotFound):
        consents.revoke(session, borrower_index=BOB, consent_ref=consent.ref, now=NOW)
    consents.revoke(session, borrower_index=ALICE, consent_ref=consent.ref, now=NOW)
    lender = members.get(session, "LENDERB")
    with pytest.raises(Forbidden):
        consents.redeem_code(
            session,
            load_key_material(settings),
            code=code,
            institution_id=lender.id,
            borrower_index=ALICE,
            now=NOW,
        )
    assert [c.ref for c in consents.list_for_borrower(session, ALICE)] == [consent.ref]
    assert consents.list_for_borrower(session, BOB) == []


def test_a_written_authorization_lasts_the_policy_period_from_its_signing(
    session: Session,
) -> None:
    admit(session, "LENDERB")
    lender = members.get(session, "LENDERB")
    consent = consents.attest_written(
        session,
        Policy(written_authorization_valid_days=90),
        institution_id=lender.id,
        borrower_index=ALICE,
        reference="APP-1",
        form_sha256="0" * 64,
        signed_on=NOW.date() - dt.timedelta(days=10),
        now=NOW,
    )
    assert consent.expires_at.date() == NOW.date() + dt.timedelta(days=80)
    assert consent.is_live(NOW) and not consent.is_live(NOW + dt.timedelta(days=81))
