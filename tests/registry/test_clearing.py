"""Settled debts disappear for real: the record, its history, its keys; a tombstone stays."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from conftest import Clock
from crypto import dsse
from crypto import envelope_encryption as ee
from crypto.errors import DecryptionError
from factories import Member, admit, envelope, national_id, payload, post_envelope, signed, submit
from ondisk import database_bytes
from registry.clearing import CERTIFICATE_PAYLOAD_TYPE, Clearer
from registry.models import (
    Borrower,
    ClearanceCertificate,
    DataKey,
    Delinquency,
    Report,
    Tombstone,
)
from registry.policy import Policy
from registry.secrets import load_key_material
from registry.settings import Settings

TODAY = dt.datetime.now(dt.UTC).date()


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


def count(session: Session, model: Any) -> int:
    session.expire_all()
    n = session.scalar(select(func.count()).select_from(model)) or 0
    session.commit()
    return n


def later(doc: dict[str, Any], kind: str, sequence: int, **body: Any) -> dict[str, Any]:
    keep = ("version", "report_id", "institution", "account_ref")
    out = {k: doc[k] for k in keep}
    out["report_id"] = f"{doc['report_id']}-{sequence}"
    return {**out, "kind": kind, "sequence": sequence, **body}


def settle(doc: dict[str, Any], sequence: int = 2, kind: str = "paid_in_full") -> dict[str, Any]:
    return later(doc, "settle", sequence, settlement={"type": kind, "date": TODAY.isoformat()})


def pay(doc: dict[str, Any], amount: str, sequence: int) -> dict[str, Any]:
    return later(doc, "payment", sequence, payment={"amount": amount, "date": TODAY.isoformat()})


def clearer(settings: Settings, policy: Policy | None = None) -> Clearer:
    return Clearer(load_key_material(settings), policy or Policy())


def test_settling_clears_everything_in_the_same_request(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    doc = payload(bank)
    assert submit(client, bank, doc).status_code == 201
    response = submit(client, bank, settle(doc))
    assert response.status_code == 201
    receipt = json.loads(dsse.parse_envelope(response.data).payload)
    assert (receipt["kind"], receipt["log_index"]) == ("settle", None)
    for model in (Delinquency, Borrower):
        assert count(session, model) == 0, model
    assert count(session, DataKey) == 1  # the certificate's own key, nothing else
    [tombstone] = session.scalars(select(Tombstone)).all()
    assert (tombstone.reason, tombstone.last_sequence) == ("settled", 2)
    # Only the settling report's idempotency facts stay: no record, no envelope.
    [kept] = session.scalars(select(Report)).all()
    assert (kept.kind, kept.delinquency_id, kept.envelope_ct) == ("settle", None, b"")
    assert kept.receipt == response.data


def test_a_settlement_resent_gets_its_receipt_until_the_maximum_age(
    client: FlaskClient, bank: Member, session: Session, settings: Settings, engine: Engine
) -> None:
    doc = payload(bank)
    submit(client, bank, doc)
    raw = envelope(bank, settle(doc))
    first = post_envelope(client, bank, raw)
    again = post_envelope(client, bank, raw)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.data == first.data
    fetched = signed(client, bank, "GET", f"/v1/receipts/{settle(doc)['report_id']}")
    assert fetched.status_code == 200 and fetched.data == first.data
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    clearer(settings).sweep(sessions, soon)
    assert count(session, Report) == 1
    clearer(settings).sweep(sessions, soon + dt.timedelta(days=Policy().max_age_days))
    assert count(session, Report) == 0


def test_the_borrower_gets_a_signed_certificate_without_amounts(
    client: FlaskClient, bank: Member, session: Session, settings: Settings, app: Flask
) -> None:
    doc = payload(bank, account_ref="LOAN-77-9876")
    submit(client, bank, doc)
    submit(client, bank, settle(doc, kind="negotiated"))
    material = load_key_material(settings)
    index = material.blind_index.digest("national_id", doc["borrower"]["national_id"])
    [raw] = clearer(settings).certificates_for(session, index)
    envelope_ = dsse.parse_envelope(raw)
    assert envelope_.payload_type == CERTIFICATE_PAYLOAD_TYPE
    key = base64.b64decode(client.get("/v1/registry-keys").get_json()["keys"][0]["public_key"])
    dsse.verify_envelope(envelope_, {material.signing_keyid: key})
    certificate = json.loads(envelope_.payload)
    assert certificate["account"] == "****9876" and certificate["institution"] == "BANKA"
    assert certificate["settled_on"] == TODAY.isoformat() and certificate["cleared_at"]
    text = envelope_.payload.decode()
    for secret in ("10000", "150.00", "100.00", "LOAN-77", doc["borrower"]["national_id"]):
        assert secret not in text


def test_payments_lower_the_balance_and_paying_in_full_clears(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    doc = payload(bank)
    submit(client, bank, doc)
    assert submit(client, bank, pay(doc, "200.00", 2)).status_code == 201
    record = session.scalars(select(Delinquency)).one()
    assert (str(record.penalty), str(record.overdue_interest)) == ("0.00", "50.00")
    session.commit()
    refused = submit(client, bank, pay(doc, "10050.01", 3))
    assert refused.status_code == 422
    assert refused.get_json()["errors"][0]["rule"] == "not_above_outstanding"
    assert submit(client, bank, pay(doc, "10050.00", 3)).status_code == 201
    assert count(session, Delinquency) == 0
    assert session.scalars(select(Tombstone.reason)).all() == ["settled"]


@pytest.mark.parametrize("reason", ["fraud", "reported_in_error"])
def test_withdrawal_deletes_at_once(
    client: FlaskClient, bank: Member, session: Session, reason: str
) -> None:
    doc = payload(bank)
    submit(client, bank, doc)
    body = later(doc, "withdraw", 2, withdrawal={"reason": reason})
    assert submit(client, bank, body).status_code == 201
    assert count(session, Delinquency) == 0
    [kept] = session.scalars(select(Report)).all()
    assert (kept.kind, kept.delinquency_id, kept.envelope_ct) == ("withdraw", None, b"")
    assert session.scalars(select(Tombstone.reason)).all() == [reason]


def test_a_correction_replaces_the_state_and_history_keeps_both(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    doc = payload(bank)
    submit(client, bank, doc)
    fixed = payload(
        bank, kind="correct", sequence=2, account_ref=doc["account_ref"], overdue_interest="100.00"
    )
    assert submit(client, bank, fixed).status_code == 201
    record = session.scalars(select(Delinquency)).one()
    assert str(record.overdue_interest) == "100.00"
    assert sorted(session.scalars(select(Report.kind))) == ["correct", "open"]


def test_nothing_after_a_clearing_brings_the_record_back(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    doc = payload(bank)
    original = envelope(bank, doc)
    post_envelope(client, bank, original)
    submit(client, bank, settle(doc))
    late = payload(bank, kind="update", sequence=3, account_ref=doc["account_ref"])
    for response in (submit(client, bank, late), post_envelope(client, bank, original)):
        assert response.status_code == 409
        assert response.get_json()["code"] == "account_cleared"
        assert response.get_json()["current_sequence"] == 2
    assert count(session, Delinquency) == 0 and count(session, Borrower) == 0
    receipt = signed(client, bank, "GET", f"/v1/receipts/{doc['report_id']}")
    assert receipt.status_code == 404
    fresh = payload(bank, sequence=3, account_ref=doc["account_ref"])
    assert submit(client, bank, fresh).status_code == 201


def test_the_borrower_row_stays_while_another_record_refers_to_it(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    other = admit(session, "BANKB")
    first, second = payload(bank), payload(other)
    submit(client, bank, first)
    submit(client, other, second)
    submit(client, bank, settle(first))
    assert count(session, Borrower) == 1 and count(session, Delinquency) == 1


# --- retention, maximum age, certificate expiry: the sweeper -----------------------------


@pytest.fixture
def retention_app(settings: Settings, engine: Engine, clock: Clock) -> Any:
    from api import create_app

    app = create_app(settings, clock=clock, policy=Policy(retention_days_after_settlement=30))
    yield app
    app.extensions["registry"].engine.dispose()


def sessions_for(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def test_with_a_retention_period_the_sweeper_clears_later(
    retention_app: Flask, bank: Member, session: Session, engine: Engine, settings: Settings
) -> None:
    client = retention_app.test_client()
    doc = payload(bank)
    submit(client, bank, doc)
    assert submit(client, bank, settle(doc)).status_code == 201
    record = session.scalars(select(Delinquency)).one()
    assert (record.status, record.settlement_type) == ("settled", "paid_in_full")
    session.commit()
    refused = submit(client, bank, pay(doc, "1.00", 3))
    assert refused.status_code == 409 and refused.get_json()["code"] == "account_settled"
    policy = Policy(retention_days_after_settlement=30)
    now = dt.datetime.now(dt.UTC)
    assert clearer(settings, policy).sweep(sessions_for(engine), now).total() == 0
    assert count(session, Delinquency) == 1
    report = clearer(settings, policy).sweep(sessions_for(engine), now + dt.timedelta(days=31))
    assert report.cleared["retention"] == 1
    assert count(session, Delinquency) == 0


def test_the_maximum_age_clears_even_unpaid_records(
    client: FlaskClient, bank: Member, session: Session, engine: Engine, settings: Settings
) -> None:
    first = TODAY - dt.timedelta(days=5 * 365 + 1)
    old = payload(
        bank,
        account_ref="OLD-1",
        first_delinquency_date=first.isoformat(),
        as_of_date=(first + dt.timedelta(days=29)).isoformat(),
    )
    young = payload(bank, account_ref="YOUNG-1")
    assert submit(client, bank, old).status_code == 201
    assert submit(client, bank, young).status_code == 201
    report = clearer(settings).sweep(sessions_for(engine), dt.datetime.now(dt.UTC))
    assert report.cleared["max_age"] == 1
    assert count(session, Delinquency) == 1
    assert session.scalars(select(Tombstone.reason)).all() == ["max_age"]


def test_certificates_are_removed_after_their_period(
    client: FlaskClient, bank: Member, session: Session, engine: Engine, settings: Settings
) -> None:
    doc = payload(bank)
    submit(client, bank, doc)
    submit(client, bank, settle(doc))
    now = dt.datetime.now(dt.UTC)
    assert clearer(settings).sweep(sessions_for(engine), now).certificates_expired == 0
    swept = clearer(settings).sweep(sessions_for(engine), now + dt.timedelta(days=181))
    assert swept.certificates_expired == 1
    assert count(session, ClearanceCertificate) == 0 and count(session, DataKey) == 0


def test_tombstones_lose_their_account_index_after_the_maximum_age(
    client: FlaskClient, bank: Member, session: Session, engine: Engine, settings: Settings
) -> None:
    doc = payload(bank)
    submit(client, bank, doc)
    submit(client, bank, settle(doc))
    far = dt.datetime.now(dt.UTC) + dt.timedelta(days=5 * 365 + 2)
    assert clearer(settings).sweep(sessions_for(engine), far).tombstones_anonymised == 1
    assert session.scalars(select(Tombstone.account_index)).all() == [None]


def test_the_sweeper_is_idempotent_and_two_at_once_do_no_harm(
    client: FlaskClient, bank: Member, session: Session, engine: Engine, settings: Settings
) -> None:
    first = TODAY - dt.timedelta(days=5 * 365 + 10)
    for i in range(12):
        doc = payload(
            bank,
            account_ref=f"OLD-{i}",
            first_delinquency_date=first.isoformat(),
            as_of_date=(first + dt.timedelta(days=29)).isoformat(),
        )
        doc["borrower"]["national_id"] = national_id(200 + i)
        assert submit(client, bank, doc).status_code == 201
    now = dt.datetime.now(dt.UTC)
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            swept = clearer(settings).sweep(sessions_for(engine), now, batch=3)
            results.append(swept.cleared["max_age"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(results) == 12
    assert count(session, Tombstone) == 12 and count(session, Delinquency) == 0
    assert clearer(settings).sweep(sessions_for(engine), now).total() == 0


# --- really gone: bytes on disk, keys destroyed ----------------------------------------------


def test_after_clearing_nothing_personal_can_be_recovered(
    client: FlaskClient, bank: Member, session: Session, engine: Engine, settings: Settings
) -> None:
    people = []
    leftovers = []
    for i in range(5):
        doc = payload(bank, account_ref=f"SECRET-ACCT-{i:03d}")
        doc["borrower"] = {
            "national_id": national_id(300 + i),
            "name": f"待清除{i}",
            "phone": f"+86137000000{i:02d}",
            "address": f"秘密地址{i}",
        }
        raw = envelope(bank, doc)
        assert post_envelope(client, bank, raw).status_code == 201
        record = session.scalars(select(Delinquency)).one()
        # What an old backup or a stale page could still hold: the ciphertext and its place.
        leftovers.append((record.ref, record.data_key.ref, record.name_ct))
        session.commit()
        assert submit(client, bank, settle(doc)).status_code == 201
        people.append((doc, raw))

    disk = database_bytes(engine)
    assert b"BANKA" in disk  # the scan does see the database's rows
    for doc, raw in people:
        values = [doc["borrower"][k] for k in ("national_id", "name", "phone", "address")]
        for value in [*values, doc["account_ref"]]:
            assert value.encode() not in disk and value.encode("utf-16-le") not in disk
        assert dsse.parse_envelope(raw).payload[:40] not in disk

    material = load_key_material(settings)
    remaining = list(session.scalars(select(DataKey)))
    assert {k.ref for k in remaining}.isdisjoint({key_ref for _, key_ref, _ in leftovers})
    for row_ref, _, name_ct in leftovers:
        aad = ee.field_aad("delinquencies", "name", row_ref, 1)
        for key in remaining:
            plain = ee.unwrap_data_key(
                material.keyring, key.master_version, key.wrapped, key_ref=key.ref
            )
            with pytest.raises(DecryptionError):
                ee.decrypt_field(plain, name_ct, aad)


def test_a_record_opened_and_settled_in_one_session_clears_without_a_double_delete(
    session: Session, settings: Settings
) -> None:
    """Reports loaded in the session are not deleted twice (once in bulk, once by the ORM)."""
    from registry.intake import Intake
    from registry.models import Institution

    bank = admit(session, "BANKA")
    caller = session.scalars(select(Institution)).one()
    intake = Intake(load_key_material(settings), Policy())
    doc = payload(bank)
    now = dt.datetime.now(dt.UTC)
    intake.submit(session, caller, envelope(bank, doc), now)
    record = session.scalars(select(Delinquency)).one()
    assert len(record.reports) == 1  # loaded into this session
    intake.submit(session, caller, envelope(bank, settle(doc)), now)
    assert count(session, Delinquency) == 0
    assert [r.kind for r in session.scalars(select(Report))] == ["settle"]
