"""Settled debts disappear for real: the record, its history, its keys; a tombstone stays."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import warnings
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from conftest import Clock, sqlite_write_lock_is_free
from crypto import dsse
from crypto import envelope_encryption as ee
from crypto.errors import DecryptionError
from factories import Member, admit, envelope, national_id, payload, post_envelope, signed, submit
from ondisk import database_bytes
from registry import clearing, disputes, statements
from registry.clearing import CERTIFICATE_PAYLOAD_TYPE, Clearer, ClearReason
from registry.models import (
    Borrower,
    BorrowerStatement,
    ClearanceCertificate,
    DataKey,
    Delinquency,
    Dispute,
    Notification,
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


# --- clear_many: many records in one transaction ------------------------------------------


def open_for(client: FlaskClient, bank: Member, person: int, account: str) -> dict[str, Any]:
    doc = payload(bank, account_ref=account)
    doc["borrower"]["national_id"] = national_id(person)
    assert submit(client, bank, doc).status_code == 201
    return doc


def records_by_account(session: Session, settings: Settings) -> dict[str, Delinquency]:
    """Every record in the session, by its decrypted account reference."""
    session.expire_all()
    reader = clearer(settings)
    return {reader.account_ref(r): r for r in session.scalars(select(Delinquency))}


def personal_keys(session: Session) -> set[int]:
    """The data keys of every record, borrower, dispute and statement now stored."""
    keys: set[int] = set()
    for model in (Delinquency, Borrower, Dispute, BorrowerStatement):
        keys |= set(session.scalars(select(model.data_key_id)))
    return keys


def clear_accounts(
    engine: Engine, settings: Settings, accounts: list[str], reason: ClearReason
) -> None:
    """Clear the records of these accounts with one ``clear_many`` call, in one transaction."""
    with sessions_for(engine)() as session, session.begin():
        found = records_by_account(session, settings)
        records = [found[a] for a in accounts]
        refs = {r.id: a for r, a in zip(records, accounts, strict=True)}
        clearer(settings).clear_many(
            session, records, reason, dt.datetime.now(dt.UTC), account_refs=refs
        )


def test_a_report_number_is_never_given_twice_even_after_the_newest_report_is_cleared(
    client: FlaskClient, bank: Member, engine: Engine, settings: Settings
) -> None:
    """A receipt's log index increases with every accepted report (docs/protocol.md): clearing
    the record of the newest report deletes that report, and the next one still gets a larger
    number than any receipt given before."""

    def log_index(doc: dict[str, Any]) -> int:
        response = submit(client, bank, doc)
        assert response.status_code == 201
        index = json.loads(dsse.parse_envelope(response.data).payload)["log_index"]
        assert isinstance(index, int)
        return index

    given = [log_index(payload(bank, account_ref=f"NEWEST-{n}")) for n in range(2)]
    clear_accounts(engine, settings, ["NEWEST-1"], ClearReason.REPORTED_IN_ERROR)
    after = log_index(payload(bank, account_ref="NEWEST-2"))
    assert given[0] < given[1] < after


def test_clear_many_clears_every_record_of_one_borrower_with_what_is_attached(
    client: FlaskClient, bank: Member, session: Session, engine: Engine, settings: Settings
) -> None:
    material = load_key_material(settings)
    who = material.blind_index.digest("national_id", national_id(1))
    accounts = ["LOAN-A-1111", "LOAN-B-2222", "LOAN-C-3333"]
    for account in accounts:
        open_for(client, bank, 1, account)
    record = records_by_account(session, settings)["LOAN-B-2222"]
    disputes.file_dispute(
        session,
        material,
        Policy(),
        borrower_index=who,
        record_ref=record.ref,
        reason="other",
        text="我已经还清了",
        now=dt.datetime.now(dt.UTC),
    )
    for target in (record.ref, None):
        statements.set_statement(
            session,
            material,
            borrower_index=who,
            record_ref=target,
            text="本人声明",
            now=dt.datetime.now(dt.UTC),
        )
    session.commit()
    doomed = personal_keys(session)
    session.commit()

    clear_accounts(engine, settings, accounts, ClearReason.REPORTED_IN_ERROR)

    for model in (Delinquency, Borrower, Dispute, BorrowerStatement):
        assert count(session, model) == 0, model
    assert sorted(session.scalars(select(Tombstone.reason))) == ["reported_in_error"] * 3
    kept = set(session.scalars(select(DataKey.id)))
    assert kept.isdisjoint(doomed)
    certificate_keys = set(session.scalars(select(ClearanceCertificate.data_key_id)))
    assert len(certificate_keys) == 3 and certificate_keys <= kept
    session.commit()
    signed_certificates = clearer(settings).certificates_for(session, who)
    accounts_shown = sorted(
        json.loads(dsse.parse_envelope(raw).payload)["account"] for raw in signed_certificates
    )
    assert accounts_shown == ["****1111", "****2222", "****3333"]


def test_clear_many_across_borrowers_keeps_a_borrower_with_another_record(
    client: FlaskClient,
    bank: Member,
    session: Session,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Chunks of two: person 3's cleared record and their kept one, and person 1's two
    # records, fall into different chunks of the same call.
    monkeypatch.setattr(clearing, "CHUNK", 2)
    material = load_key_material(settings)
    for person, account in [(1, "P1-A"), (2, "P2-A"), (1, "P1-B"), (3, "P3-A"), (3, "P3-KEPT")]:
        open_for(client, bank, person, account)
    statements.set_statement(
        session,
        material,
        borrower_index=material.blind_index.digest("national_id", national_id(3)),
        record_ref=None,
        text="关于我的档案",
        now=dt.datetime.now(dt.UTC),
    )
    session.commit()

    clear_accounts(engine, settings, ["P1-A", "P2-A", "P3-A", "P1-B"], ClearReason.SETTLED)

    session.expire_all()
    [left] = session.scalars(select(Delinquency)).all()
    assert clearer(settings).account_ref(left) == "P3-KEPT"  # its key is intact
    [borrower] = session.scalars(select(Borrower)).all()
    assert borrower.id == left.borrower_id
    [statement] = session.scalars(select(BorrowerStatement)).all()
    assert statement.delinquency_id is None  # the kept borrower's statement on the file stays
    assert count(session, Tombstone) == 4 and count(session, ClearanceCertificate) == 4
    assert personal_keys(session) == {left.data_key_id, borrower.data_key_id, statement.data_key_id}


def test_clear_many_leaves_no_loaded_object_for_a_later_flush(
    client: FlaskClient, bank: Member, engine: Engine, settings: Settings
) -> None:
    """Rows deleted around the ORM leave the session: committing later deletes nothing twice."""
    for person, account in [(1, "L-1"), (1, "L-2"), (2, "L-3")]:
        open_for(client, bank, person, account)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with sessions_for(engine)() as session, session.begin():
            found = records_by_account(session, settings)
            records = list(found.values())
            for record in records:
                assert record.reports and record.borrower.data_key  # loaded into the session
            records[0].channels_tried = "sms"  # a pending change is written, then deleted
            refs = {r.id: a for a, r in found.items()}
            clearer(settings).clear_many(
                session, records, ClearReason.SETTLED, dt.datetime.now(dt.UTC), account_refs=refs
            )
            assert not [o for o in session if isinstance(o, Delinquency | Borrower | Report)]
            session.flush()
    with sessions_for(engine)() as session:
        assert count(session, Delinquency) == 0 and count(session, Borrower) == 0


def test_the_sweeper_clears_many_records_once_and_leaves_no_key_behind(
    retention_app: Flask, bank: Member, session: Session, engine: Engine, settings: Settings
) -> None:
    client = retention_app.test_client()
    material = load_key_material(settings)
    people = [1, 1, 1, 2, 3, 3, 4, 5, 6, 7, 7]
    for n, person in enumerate(people):
        doc = open_for(client, bank, person, f"SWEEP-{n:04d}")
        assert submit(client, bank, settle(doc)).status_code == 201
    kept = open_for(client, bank, 7, "SWEEP-OPEN")  # person 7 keeps an open record
    records = records_by_account(session, settings)
    now = dt.datetime.now(dt.UTC)
    disputes.file_dispute(
        session,
        material,
        Policy(),
        borrower_index=material.blind_index.digest("national_id", national_id(3)),
        record_ref=records["SWEEP-0004"].ref,
        reason="other",
        text="有误",
        now=now,
    )
    statements.set_statement(
        session,
        material,
        borrower_index=material.blind_index.digest("national_id", national_id(1)),
        record_ref=records["SWEEP-0001"].ref,
        text="已还清",
        now=now,
    )
    session.commit()
    doomed = personal_keys(session)
    session.commit()

    policy = Policy(retention_days_after_settlement=30)
    later_on = now + dt.timedelta(days=31)
    swept = clearer(settings, policy).sweep(sessions_for(engine), later_on, batch=4)
    assert swept.cleared["retention"] == len(people)
    assert clearer(settings, policy).sweep(sessions_for(engine), later_on).total() == 0

    [left] = session.scalars(select(Delinquency)).all()
    assert clearer(settings).account_ref(left) == kept["account_ref"]
    assert count(session, Borrower) == 1
    assert {r.delinquency_id for r in session.scalars(select(Report))} == {left.id}
    assert count(session, Tombstone) == len(people)
    assert count(session, Dispute) == 0 and count(session, BorrowerStatement) == 0
    still_needed = personal_keys(session)
    assert set(session.scalars(select(DataKey.id))).isdisjoint(doomed - still_needed)
    session.commit()
    # The certificates (and their keys) go after their period, in one sweep as well.
    much_later = later_on + dt.timedelta(days=181)
    expired = clearer(settings, policy).sweep(sessions_for(engine), much_later, batch=4)
    assert expired.certificates_expired == len(people)
    assert count(session, ClearanceCertificate) == 0
    certificate_or_record_keys = set(session.scalars(select(DataKey.id))) - personal_keys(session)
    session.commit()
    notification_keys = set(session.scalars(select(Notification.data_key_id)))
    assert certificate_or_record_keys <= notification_keys


def test_clear_many_notes_its_clearings_and_copies_each_record_into_its_tombstone(
    client: FlaskClient,
    bank: Member,
    session: Session,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clearing, "CHUNK", 2)  # three chunks
    now = dt.datetime.now(dt.UTC)
    accounts = [f"NOTE-{n:04d}" for n in range(5)]
    for n, account in enumerate(accounts):
        open_for(client, bank, n % 3, account)
    with sessions_for(engine)() as s, s.begin():
        found = records_by_account(s, settings)
        records = [found[a] for a in accounts]
        expected = sorted((r.institution_id, r.account_index, r.sequence) for r in records)
        clearer(settings).clear_many(
            s,
            records,
            ClearReason.FRAUD,
            now,
            account_refs={r.id: a for r, a in zip(records, accounts, strict=True)},
        )
        assert s.info[clearing.CLEARINGS_NOTED] == [("fraud", 2), ("fraud", 2), ("fraud", 1)]
    stones = session.scalars(select(Tombstone)).all()
    assert sorted((t.institution_id, t.account_index, t.last_sequence) for t in stones) == expected
    assert {(t.reason, t.cleared_at) for t in stones} == {("fraud", now)}
    assert count(session, Delinquency) == 0 and count(session, ClearanceCertificate) == 5


# --- the sweeper's threads, SQLite's write lock, a failure mid-way -------------------------


def settled_accounts(client: FlaskClient, bank: Member, prefix: str, n: int) -> None:
    """``n`` settled records, one borrower each, cleared by a sweep 31 days later."""
    for i in range(n):
        doc = open_for(client, bank, 500 + i, f"{prefix}-{i}")
        assert submit(client, bank, settle(doc)).status_code == 201


RETENTION = Policy(retention_days_after_settlement=30)


def a_month_later() -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=31)


@pytest.mark.sqlite_only
def test_the_sweeper_signs_without_holding_sqlites_write_lock(
    retention_app: Flask,
    bank: Member,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settled_accounts(retention_app.test_client(), bank, "LOCK", 3)
    free: list[bool] = []
    certify = Clearer._certify

    def watched(self: Clearer, *args: Any, **kwargs: Any) -> Any:
        # Another writer gets the write lock at once (no busy wait) while this one signs.
        free.append(sqlite_write_lock_is_free(str(engine.url.database)))
        return certify(self, *args, **kwargs)

    monkeypatch.setattr(Clearer, "_certify", watched)
    swept = clearer(settings, RETENTION).sweep(sessions_for(engine), a_month_later(), workers=1)
    assert swept.cleared["retention"] == 3
    assert free == [True, True, True]


@pytest.mark.sqlite_only
def test_what_changes_while_the_sweeper_signs_is_read_again_before_it_clears(
    retention_app: Flask,
    bank: Member,
    session: Session,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settled_accounts(retention_app.test_client(), bank, "CHANGE", 3)
    certify_due = Clearer._certify_due
    meanwhile: list[str] = []

    def interrupted(self: Clearer, *args: Any, **kwargs: Any) -> Any:
        if not meanwhile:  # signing the first certificate, outside the write lock
            meanwhile.append("done")
            with sessions_for(engine)() as other, other.begin():
                found = records_by_account(other, settings)
                gone = found["CHANGE-0"]  # cleared by someone else first
                clearer(settings).clear_many(
                    other,
                    [gone],
                    ClearReason.FRAUD,
                    dt.datetime.now(dt.UTC),
                    account_refs={gone.id: "CHANGE-0"},
                )
                found["CHANGE-1"].product = "mortgage"  # and this one changed
        return certify_due(self, *args, **kwargs)

    monkeypatch.setattr(Clearer, "_certify_due", interrupted)
    swept = clearer(settings, RETENTION).sweep(sessions_for(engine), a_month_later(), workers=1)

    assert swept.cleared["retention"] == 2
    assert sorted(session.scalars(select(Tombstone.reason))) == ["fraud", "settled", "settled"]
    session.commit()
    material = load_key_material(settings)
    shown = []
    for i in range(3):
        index = material.blind_index.digest("national_id", national_id(500 + i))
        [raw] = clearer(settings).certificates_for(session, index)  # one each, no more
        shown.append(json.loads(dsse.parse_envelope(raw).payload)["product"])
    assert shown == ["credit_card", "mortgage", "credit_card"]


class DiskFull(RuntimeError):
    """Stands in for whatever fails in the middle of a chunk."""


def the_next_sweep_clears_the_rest(
    session: Session, engine: Engine, settings: Settings, left: int
) -> None:
    """After a failed sweep: the next one clears the ``left`` records, and all nine are gone."""
    swept = clearer(settings, RETENTION).sweep(sessions_for(engine), a_month_later())
    assert swept.cleared["retention"] == left
    assert count(session, Delinquency) == 0 and count(session, Tombstone) == 9


def test_a_sweep_that_fails_mid_way_leaves_each_record_cleared_whole_or_untouched(
    retention_app: Flask,
    bank: Member,
    session: Session,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settled_accounts(retention_app.test_client(), bank, "SPLIT", 9)
    note = clearing.note_clearings
    chunks: list[int] = []

    def failing_second(s: Session, reason: ClearReason, n: int) -> None:
        # The last step of a chunk: everything else of it has been written by now.
        chunks.append(n)
        if len(chunks) == 2:
            raise DiskFull("no space left on device")
        note(s, reason, n)

    monkeypatch.setattr(clearing, "note_clearings", failing_second)
    with pytest.raises(DiskFull):
        clearer(settings, RETENTION).sweep(sessions_for(engine), a_month_later(), batch=3)

    left, stones = count(session, Delinquency), count(session, Tombstone)
    assert left >= 3 and left + stones == 9  # the failed chunk (and any not begun) untouched
    assert count(session, ClearanceCertificate) == stones and count(session, Borrower) == left
    certified = set(session.scalars(select(ClearanceCertificate.data_key_id)))
    assert set(session.scalars(select(DataKey.id))) == personal_keys(session) | certified
    session.commit()
    monkeypatch.undo()
    the_next_sweep_clears_the_rest(session, engine, settings, left)


def test_a_certificate_that_cannot_be_made_stops_the_sweep_and_loses_nothing(
    retention_app: Flask,
    bank: Member,
    session: Session,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On SQLite the next chunk is certified in a helper thread while one is written: its
    failure reaches the sweep's caller, what was written stays whole, and no chunk is lost."""
    settled_accounts(retention_app.test_client(), bank, "CERT", 9)
    certify_due = Clearer._certify_due
    made: list[int] = []

    def failing_fourth(self: Clearer, *args: Any, **kwargs: Any) -> Any:
        made.append(1)
        if len(made) == 4:  # the second chunk's first certificate
            raise DecryptionError("the data key does not unwrap")
        return certify_due(self, *args, **kwargs)

    monkeypatch.setattr(Clearer, "_certify_due", failing_fourth)
    with pytest.raises(DecryptionError):
        clearer(settings, RETENTION).sweep(sessions_for(engine), a_month_later(), batch=3)
    assert not [t for t in threading.enumerate() if t.name.startswith("sweeper-certify")]
    left, stones = count(session, Delinquency), count(session, Tombstone)
    assert left + stones == 9 and stones % 3 == 0 and stones < 9  # whole chunks, not all
    assert count(session, ClearanceCertificate) == stones
    session.commit()
    monkeypatch.undo()
    the_next_sweep_clears_the_rest(session, engine, settings, left)


def test_the_sweep_uses_the_engines_number_of_threads_by_default(
    retention_app: Flask,
    bank: Member,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settled_accounts(retention_app.test_client(), bank, "DEFAULT", 2)
    asked: list[int] = []
    clear_matching = Clearer._clear_matching

    def spied(self: Clearer, *args: Any) -> Any:
        asked.append(args[-1])  # workers
        return clear_matching(self, *args)

    monkeypatch.setattr(Clearer, "_clear_matching", spied)
    swept = clearer(settings, RETENTION).sweep(sessions_for(engine), a_month_later())
    assert swept.cleared["retention"] == 2
    expected = {"postgresql": 2, "sqlite": 1}[engine.dialect.name]
    assert asked == [expected, expected]  # retention, maximum age
    assert clearing.SWEEP_WORKERS[engine.dialect.name] == expected


def test_two_threads_clear_each_record_once_in_chunks_of_their_own(
    retention_app: Flask,
    bank: Member,
    session: Session,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settled_accounts(retention_app.test_client(), bank, "PAIR", 7)
    threads: set[str] = set()
    clear_certified = Clearer._clear_certified

    def noted(self: Clearer, *args: Any, **kwargs: Any) -> Any:
        threads.add(threading.current_thread().name)
        return clear_certified(self, *args, **kwargs)

    monkeypatch.setattr(Clearer, "_clear_certified", noted)
    swept = clearer(settings, RETENTION).sweep(
        sessions_for(engine), a_month_later(), batch=2, workers=2
    )
    assert swept.cleared["retention"] == 7
    assert threads and all(name.startswith("sweeper") for name in threads)
    assert count(session, Delinquency) == 0 and count(session, Borrower) == 0
    assert count(session, Tombstone) == 7 and count(session, ClearanceCertificate) == 7
    assert clearer(settings, RETENTION).sweep(sessions_for(engine), a_month_later()).total() == 0


@pytest.mark.postgresql_only
def test_a_record_held_for_a_moment_is_still_cleared_by_the_same_sweep(
    retention_app: Flask,
    bank: Member,
    session: Session,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settled_accounts(retention_app.test_client(), bank, "HELD", 5)
    first = min(session.scalars(select(Delinquency.id)))
    session.commit()
    member = engine.connect()  # a member's report holds the first record's row for a moment
    member.execute(select(Delinquency.id).where(Delinquency.id == first).with_for_update())
    certify_due = Clearer._certify_due

    def then_let_go(self: Clearer, *args: Any, **kwargs: Any) -> Any:
        if member.in_transaction():
            member.commit()
        return certify_due(self, *args, **kwargs)

    monkeypatch.setattr(Clearer, "_certify_due", then_let_go)
    try:
        swept = clearer(settings, RETENTION).sweep(
            sessions_for(engine), a_month_later(), batch=2, workers=1
        )
    finally:
        member.close()
    assert swept.cleared["retention"] == 5
    assert count(session, Delinquency) == 0


@pytest.mark.postgresql_only
def test_on_postgresql_a_chunk_is_deleted_in_one_statement(
    retention_app: Flask,
    bank: Member,
    session: Session,
    engine: Engine,
    settings: Settings,
) -> None:
    """Eleven statements a chunk were eleven round trips and an orphan query the planner got
    wrong; one statement deletes the records, what hangs off them and their keys."""
    settled_accounts(retention_app.test_client(), bank, "ONE", 5)
    seen: list[str] = []

    def note(_c: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", note)
    try:
        swept = clearer(settings, RETENTION).sweep(
            sessions_for(engine), a_month_later(), batch=2, workers=1
        )
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert swept.cleared["retention"] == 5
    clearing_statements = [s for s in seen if "DELETE FROM delinquencies" in s]
    assert len(clearing_statements) == 3  # chunks of 2, 2 and 1
    assert all(s.startswith("WITH") and "DELETE FROM data_keys" in s for s in clearing_statements)
    assert not [s for s in seen if s.startswith(("DELETE FROM borrowers", "DELETE FROM data_keys"))]
    assert count(session, Delinquency) == 0 and count(session, Borrower) == 0
    assert count(session, Tombstone) == 5 and count(session, ClearanceCertificate) == 5


@pytest.mark.postgresql_only
def test_clearing_a_record_already_gone_writes_nothing(
    client: FlaskClient, bank: Member, engine: Engine, settings: Settings
) -> None:
    """A record another transaction cleared meanwhile is not certified a second time."""
    for person, account in [(1, "GONE-1"), (2, "GONE-2")]:
        open_for(client, bank, person, account)
    with (
        pytest.raises(RuntimeError, match="cleared 1 of 2 records"),
        sessions_for(engine)() as stale,
        stale.begin(),
    ):
        found = records_by_account(stale, settings)
        clear_accounts(engine, settings, ["GONE-1"], ClearReason.SETTLED)
        refs = {r.id: a for a, r in found.items()}
        clearer(settings).clear_many(
            stale,
            list(found.values()),
            ClearReason.SETTLED,
            dt.datetime.now(dt.UTC),
            account_refs=refs,
        )
    with sessions_for(engine)() as session:
        assert count(session, Delinquency) == 1 and count(session, Tombstone) == 1
        assert count(session, ClearanceCertificate) == 1
