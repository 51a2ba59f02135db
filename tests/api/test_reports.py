"""POST /v1/reports and GET /v1/receipts: the intake contract as a member sees it."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from api.services import EXTENSION
from conftest import Clock
from crypto import dsse, ed25519
from factories import (
    Member,
    admit,
    envelope,
    field_rules,
    new_key,
    payload,
    payload_bytes,
    post_envelope,
    problem_of,
    signed,
    submit,
)
from registry import members
from registry.models import (
    Borrower,
    ComplianceViolation,
    DataKey,
    Delinquency,
    Institution,
    Report,
    RequestNonce,
)
from registry.receipts import RECEIPT_PAYLOAD_TYPE

PERSISTENT = (Borrower, Delinquency, Report, DataKey)


def counts(session: Session) -> dict[str, int]:
    session.expire_all()
    return {
        m.__tablename__: session.scalar(select(func.count()).select_from(m)) or 0
        for m in (*PERSISTENT, ComplianceViolation)
    }


def registry_key(client: FlaskClient) -> tuple[str, bytes]:
    keys = client.get("/v1/registry-keys").get_json()["keys"]
    return keys[0]["keyid"], base64.b64decode(keys[0]["public_key"])


def verified_receipt(client: FlaskClient, body: bytes) -> dict[str, Any]:
    keyid, raw = registry_key(client)
    receipt = dsse.parse_envelope(body)
    assert receipt.payload_type == RECEIPT_PAYLOAD_TYPE
    assert dsse.verify_envelope(receipt, {keyid: raw}) == keyid
    document: dict[str, Any] = json.loads(receipt.payload)
    return document


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture
def other(session: Session) -> Member:
    return admit(session, "BANKB")


# --- acceptance and receipts -------------------------------------------------------------


def test_an_accepted_report_gets_a_signed_receipt(client: FlaskClient, bank: Member) -> None:
    doc = payload(bank)
    raw = envelope(bank, doc)
    response = post_envelope(client, bank, raw)
    assert response.status_code == 201
    assert response.headers["Location"] == f"/v1/receipts/{doc['report_id']}"
    receipt = verified_receipt(client, response.data)
    assert receipt["report_id"] == doc["report_id"]
    assert receipt["institution"] == "BANKA"
    assert receipt["envelope_sha256"] == hashlib.sha256(raw).hexdigest()
    assert receipt["sequence"] == 1 and receipt["log_index"] >= 1
    assert receipt["accepted_at"].endswith("Z")


def test_a_new_accounts_receipt_is_stored_with_its_row_and_names_the_rows_id(
    app: Flask, client: FlaskClient, bank: Member, session: Session
) -> None:
    """The receipt is signed before its row is written (the id is taken up front), so the
    report row never exists without it; its log index is the row's id."""
    engine = app.extensions[EXTENSION].engine
    updates: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            updates.append(statement)

    docs = [payload(bank), payload(bank, account_ref="CARD-0002-8765")]
    event.listen(engine, "before_cursor_execute", note)
    try:
        answers = [submit(client, bank, doc) for doc in docs]
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert [a.status_code for a in answers] == [201, 201]
    assert updates == []
    indexes = []
    for doc, answer in zip(docs, answers, strict=True):
        stored = session.scalars(select(Report).where(Report.report_id == doc["report_id"])).one()
        assert stored.receipt == answer.data
        indexes.append(verified_receipt(client, answer.data)["log_index"])
        assert indexes[-1] == stored.id
    assert indexes[0] < indexes[1]


def test_the_receipt_can_be_fetched_again(client: FlaskClient, bank: Member) -> None:
    doc = payload(bank)
    first = submit(client, bank, doc)
    again = signed(client, bank, "GET", f"/v1/receipts/{doc['report_id']}")
    assert again.status_code == 200
    assert again.data == first.data


def test_a_receipt_of_another_member_is_not_found(
    client: FlaskClient, bank: Member, other: Member
) -> None:
    doc = payload(bank)
    submit(client, bank, doc)
    problem_of(
        signed(client, other, "GET", f"/v1/receipts/{doc['report_id']}"), 404, "receipt_not_found"
    )


def test_the_same_envelope_twice_gives_the_same_receipt(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    raw = envelope(bank, payload(bank))
    first = post_envelope(client, bank, raw)
    second = post_envelope(client, bank, raw)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.data == second.data
    assert counts(session)["reports"] == 1


def test_the_same_report_id_with_other_bytes_is_a_conflict(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    doc = payload(bank)
    submit(client, bank, doc)
    before = counts(session)
    changed = dict(doc, overdue_principal="20000.00")
    body = problem_of(submit(client, bank, changed), 409, "report_id_conflict")
    assert body["report_id"] == doc["report_id"]
    assert counts(session) == before


def test_personal_fields_are_stored_encrypted_and_indexed(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    doc = payload(bank)
    raw = envelope(bank, doc)
    assert post_envelope(client, bank, raw).status_code == 201
    record = session.scalars(select(Delinquency)).one()
    columns = [record.account_ref_ct, record.name_ct, record.phone_ct, record.address_ct]
    for value in ("张三".encode(), b"+8613800138000", b"CARD-0001-4321"):
        assert all(value not in (c or b"") for c in columns)
    report = session.scalars(select(Report)).one()
    assert raw not in report.envelope_ct and b'"payload"' not in report.envelope_ct
    borrower = session.scalars(select(Borrower)).one()
    assert doc["borrower"]["national_id"].encode() not in borrower.national_id_ct
    assert len(borrower.id_index) == 32


def test_an_update_with_a_higher_sequence_changes_the_record(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    submit(client, bank, payload(bank))
    update = payload(
        bank,
        kind="update",
        sequence=2,
        overdue_principal="9000.00",
        penalty="90.00",
        collection_stage="repayment_plan",
    )
    response = submit(client, bank, update)
    assert response.status_code == 201
    assert verified_receipt(client, response.data)["sequence"] == 2
    record = session.scalars(select(Delinquency)).one()
    assert (record.sequence, str(record.overdue_principal)) == (2, "9000.00")
    assert record.collection_stage == "repayment_plan"
    assert counts(session)["reports"] == 2


@pytest.mark.parametrize("sequence", [1, 2])
def test_a_stale_sequence_is_refused_with_the_current_one(
    client: FlaskClient, bank: Member, session: Session, sequence: int
) -> None:
    submit(client, bank, payload(bank))
    submit(client, bank, payload(bank, kind="update", sequence=2))
    before = counts(session)
    body = problem_of(
        submit(client, bank, payload(bank, kind="update", sequence=sequence)), 409, "sequence_stale"
    )
    assert body["current_sequence"] == 2
    assert counts(session) == before


def test_an_update_for_an_unknown_account_is_refused(client: FlaskClient, bank: Member) -> None:
    problem_of(
        submit(client, bank, payload(bank, kind="update", sequence=2)), 409, "account_not_open"
    )


def test_a_second_open_for_the_same_account_is_refused(client: FlaskClient, bank: Member) -> None:
    submit(client, bank, payload(bank))
    problem_of(submit(client, bank, payload(bank, sequence=5)), 409, "account_already_open")


def test_an_update_cannot_move_the_account_to_another_borrower(
    client: FlaskClient, bank: Member
) -> None:
    submit(client, bank, payload(bank))
    doc = payload(bank, kind="update", sequence=2)
    doc["borrower"]["national_id"] = "11010519491231002X"
    body = problem_of(submit(client, bank, doc), 422, "validation_failed")
    assert ("borrower.national_id", "matches_account") in field_rules(body)


def test_two_members_reporting_one_borrower_share_the_borrower_row(
    client: FlaskClient, bank: Member, other: Member, session: Session
) -> None:
    assert submit(client, bank, payload(bank)).status_code == 201
    assert submit(client, other, payload(other)).status_code == 201
    assert counts(session)["borrowers"] == 1 and counts(session)["delinquencies"] == 2


# --- validation: every refusal is problem details and leaves nothing behind -----------------


def test_validation_errors_name_field_and_rule_and_store_nothing(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    doc = payload(bank, overdue_principal=1000, days_past_due=3)
    doc["borrower"]["national_id"] = "110105194912310021"
    body = problem_of(submit(client, bank, doc), 422, "validation_failed")
    assert field_rules(body) >= {
        ("overdue_principal", "decimal_string"),
        ("days_past_due", "agrees_with_dates"),
        ("borrower.national_id", "gb11643_check"),
    }
    assert all(v == 0 for v in counts(session).values())


def test_floats_anywhere_in_the_payload_are_refused(client: FlaskClient, bank: Member) -> None:
    raw = payload_bytes(payload(bank)).replace(b'"days_past_due":30', b'"days_past_due":30.0')
    body = problem_of(post_envelope(client, bank, envelope(bank, raw)), 400, "payload_malformed")
    assert ("payload", "float_not_allowed") in field_rules(body)


def test_duplicated_keys_in_the_payload_are_refused(client: FlaskClient, bank: Member) -> None:
    raw = payload_bytes(payload(bank))[:-1] + b',"penalty":"0.00"}'
    body = problem_of(post_envelope(client, bank, envelope(bank, raw)), 400, "payload_malformed")
    assert ("payload", "duplicate_key") in field_rules(body)


def test_a_payload_that_is_not_json_is_refused(client: FlaskClient, bank: Member) -> None:
    problem_of(post_envelope(client, bank, envelope(bank, b"\xff\xfe")), 400, "payload_malformed")


def test_the_payload_type_must_be_the_report_type(client: FlaskClient, bank: Member) -> None:
    raw = envelope(bank, payload(bank), payload_type="application/json")
    problem_of(post_envelope(client, bank, raw), 400, "payload_type_unsupported")


@pytest.mark.parametrize("body", [b"", b"{}", b"not json", b'{"payload":"","payloadType":"x"}'])
def test_a_body_that_is_not_an_envelope_is_refused(
    client: FlaskClient, bank: Member, body: bytes
) -> None:
    problem_of(post_envelope(client, bank, body), 400, "envelope_malformed")


def test_the_payload_institution_must_be_the_caller(
    client: FlaskClient, bank: Member, other: Member, session: Session
) -> None:
    body = problem_of(submit(client, bank, payload("BANKB")), 403, "institution_mismatch")
    assert ("institution", "is_caller") in field_rules(body)
    assert counts(session)["reports"] == 0


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"penalty": "100.01"}, "penalty", "penalty_cap"),
        ({"overdue_interest": "197.27"}, "overdue_interest", "interest_cap"),
    ],
)
def test_charging_caps_are_enforced_named_and_counted(
    client: FlaskClient,
    bank: Member,
    session: Session,
    changes: dict[str, str],
    field: str,
    rule: str,
) -> None:
    body = problem_of(submit(client, bank, payload(bank, **changes)), 422, "charging_cap_exceeded")
    [error] = body["errors"]
    assert (error["field"], error["rule"]) == (field, rule)
    assert "limit" in error["message"]
    after = counts(session)
    assert after["compliance_violations"] == 1
    assert all(after[m.__tablename__] == 0 for m in PERSISTENT)
    [(_, violations)] = [row for row in members.list_members(session) if row[0].code == "BANKA"]
    assert violations == 1


def test_reports_exactly_at_the_caps_are_accepted(client: FlaskClient, bank: Member) -> None:
    doc = payload(bank, penalty="100.00", overdue_interest="197.26")
    assert submit(client, bank, doc).status_code == 201


# --- the envelope signature -----------------------------------------------------------------


def test_an_envelope_signed_by_an_unregistered_key_is_refused(
    client: FlaskClient, bank: Member
) -> None:
    key, keyid = new_key()
    raw = envelope(bank, payload(bank), key=key, keyid=keyid)
    problem_of(post_envelope(client, bank, raw), 422, "envelope_unknown_key")


def test_an_envelope_with_a_forged_signature_is_refused(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    key, _ = new_key()
    raw = envelope(bank, payload(bank), key=key, keyid=bank.keyid)
    problem_of(post_envelope(client, bank, raw), 422, "envelope_signature_invalid")
    assert counts(session)["reports"] == 0


def test_an_envelope_signed_by_another_members_key_is_refused(
    client: FlaskClient, bank: Member, other: Member
) -> None:
    raw = envelope(other, payload(bank))
    problem_of(post_envelope(client, bank, raw), 403, "envelope_signer_not_caller")


def test_an_envelope_signed_by_a_revoked_key_is_refused(
    client: FlaskClient, bank: Member, session: Session, clock: Clock
) -> None:
    second_key, second_id = new_key()
    members.add_key(
        session, "BANKA", ed25519.public_key_to_pem(ed25519.public_key_raw(second_key)), clock()
    )
    members.revoke_key(session, bank.keyid, clock())
    session.commit()
    raw = envelope(bank, payload(bank))
    response = post_envelope(client, bank, raw, key=second_key, keyid=second_id)
    problem_of(response, 422, "envelope_key_revoked")


def test_a_key_revoked_in_the_future_still_signs_until_then(
    client: FlaskClient, bank: Member, session: Session, clock: Clock
) -> None:
    members.revoke_key(session, bank.keyid, clock(), at=clock() + dt.timedelta(hours=1))
    session.commit()
    assert submit(client, bank, payload(bank)).status_code == 201


def _second_key(session: Session, clock: Clock) -> tuple[Ed25519PrivateKey, str]:
    """Another valid key of BANKA's, beside the one its requests are signed with."""
    key, keyid = new_key()
    members.add_key(
        session, "BANKA", ed25519.public_key_to_pem(ed25519.public_key_raw(key)), clock()
    )
    session.commit()
    return key, keyid


def test_a_member_with_several_keys_may_use_any_valid_one(
    client: FlaskClient, bank: Member, session: Session, clock: Clock
) -> None:
    key, keyid = _second_key(session, clock)
    raw = envelope(bank, payload(bank), key=key, keyid=keyid)
    assert post_envelope(client, bank, raw, key=key, keyid=keyid).status_code == 201


def test_an_envelope_signed_by_another_key_than_the_request_is_checked_against_it(
    client: FlaskClient, bank: Member, session: Session, clock: Clock
) -> None:
    key, keyid = _second_key(session, clock)
    raw = envelope(bank, payload(bank), key=key, keyid=keyid)
    assert post_envelope(client, bank, raw).status_code == 201
    forged = envelope(bank, payload(bank), key=new_key()[0], keyid=keyid)
    problem_of(post_envelope(client, bank, forged), 422, "envelope_signature_invalid")


def test_the_key_that_signed_the_request_is_not_looked_up_again_for_the_envelope(
    app: Flask, client: FlaskClient, bank: Member
) -> None:
    engine = app.extensions[EXTENSION].engine
    reads: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "member_keys" in statement:
            reads.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        assert submit(client, bank, payload(bank)).status_code == 201
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert len(reads) == 1, reads  # authentication's


# --- size ------------------------------------------------------------------------------------


def test_an_oversized_body_is_refused_with_413(
    client: FlaskClient, bank: Member, app: Flask, session: Session
) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    problem_of(post_envelope(client, bank, b"{" + b" " * limit + b"}"), 413, "payload_too_large")
    assert counts(session)["reports"] == 0


def test_nonces_of_refused_reports_are_still_consumed(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    post_envelope(client, bank, b"{}", nonce="nonce-of-a-refused-request-01")
    assert session.scalar(select(func.count()).select_from(RequestNonce)) == 1


# --- every byte of an accepted envelope matters ---------------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_byte_change_of_a_signed_envelope_is_refused(
    client: FlaskClient, session: Session, data: st.DataObject
) -> None:
    bank = _member_once(session)
    raw = envelope(bank, payload(bank))
    position = data.draw(st.integers(0, len(raw) - 1), label="position")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != raw[position]), label="value")
    mutated = raw[:position] + bytes([value]) + raw[position + 1 :]
    response = post_envelope(client, bank, mutated)
    assert response.status_code >= 400, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert counts(session)["reports"] == 0


def _member_once(session: Session) -> Member:
    """One member for all hypothesis examples of a test (fixtures run once per test)."""
    session.expire_all()
    existing = session.scalar(select(Institution).where(Institution.code == "BANKP"))
    if existing is None:
        _MEMBERS["BANKP"] = admit(session, "BANKP")
    session.commit()
    return _MEMBERS["BANKP"]


_MEMBERS: dict[str, Member] = {}


def test_a_copy_that_loses_the_race_to_its_twin_gets_the_receipt_not_a_conflict(
    app: Flask, client: FlaskClient, bank: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The twin commits between this copy's idempotency look-up and its lock on the record.

    (An update: it takes the general path, which locks the record. An open is below.)
    """
    from registry.intake import Intake

    assert submit(client, bank, payload(bank)).status_code == 201
    raw = envelope(bank, payload(bank, kind="update", sequence=2))
    first = post_envelope(client, bank, raw)
    real = Intake._report
    calls: list[str] = []

    def late(session: Session, caller: Institution, report_id: str) -> Report | None:
        calls.append(report_id)
        return None if len(calls) == 1 else real(session, caller, report_id)

    monkeypatch.setattr(Intake, "_report", staticmethod(late))
    again = post_envelope(client, bank, raw)
    assert len(calls) == 2, "the look-up was not repeated after the conflict"
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.data == first.data


@pytest.mark.postgresql_only
def test_an_open_whose_twin_commits_before_its_inserts_gets_the_twins_receipt(
    app: Flask, client: FlaskClient, bank: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open reads without locking (there is no record to lock): a twin that commits
    between its look-up and its inserts makes an insert fail on a unique key, and the retry
    finds the twin's receipt. (On SQLite the write lock, held from the nonce on, rules it out.)
    """
    import registry.intake as intake_module

    svc = app.extensions[EXTENSION]
    raw = envelope(bank, payload(bank))
    real = intake_module.check_transition
    twin: list[bytes] = []

    def twin_first(*args: Any) -> None:
        real(*args)
        if not twin:
            twin.append(b"")  # the twin's own check comes through here too
            with svc.sessions() as other:
                member = other.scalars(select(Institution).where(Institution.code == "BANKA"))
                twin[0] = svc.intake.submit(other, member.one(), raw, svc.clock()).receipt

    monkeypatch.setattr(intake_module, "check_transition", twin_first)
    answer = post_envelope(client, bank, raw)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.data == twin[0]
