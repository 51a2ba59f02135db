"""Early warning in the domain: which reports alert whom, in which transaction."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from factories import Member, admit, envelope, national_id, payload, signed, submit
from registry import alerts, consents, members
from registry.alerts import AlertType, RecordState, events_for
from registry.db import make_session_factory
from registry.errors import Conflict
from registry.intake import Intake
from registry.models import Alert, AlertDelivery, Delinquency, Subscription, Webhook
from registry.policy import Policy
from registry.relationships import has_relationship
from registry.secrets import load_key_material
from registry.settings import Settings

TODAY = dt.datetime.now(dt.UTC).date()
LOST = {"status": "lost_contact", "since": TODAY.isoformat(), "channels_tried": ["phone", "sms"]}


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture
def watcher(session: Session) -> Member:
    return admit(session, "BANKB")


def borrower_doc(member: Member, serial: int, account: str, **overrides: Any) -> dict[str, Any]:
    doc = payload(member, account_ref=account, **overrides)
    doc["borrower"] = {**doc["borrower"], "national_id": national_id(serial)}
    return doc


def update(doc: dict[str, Any], sequence: int, kind: str = "update", **changes: Any) -> Any:
    later = {"report_id": f"{doc['report_id']}-{sequence}", "kind": kind, "sequence": sequence}
    return {**doc, **later, **changes}


def overdue(days: int) -> dict[str, Any]:
    return {
        "days_past_due": days,
        "first_delinquency_date": (TODAY - dt.timedelta(days=days - 1)).isoformat(),
        "overdue_interest": "0.00",
    }


def withdraw(doc: dict[str, Any], sequence: int = 2) -> dict[str, Any]:
    keep = ("version", "institution", "account_ref")
    return {
        **{k: doc[k] for k in keep},
        "report_id": f"{doc['report_id']}-w",
        "kind": "withdraw",
        "sequence": sequence,
        "withdrawal": {"reason": "reported_in_error"},
    }


def accepted(response: TestResponse) -> None:
    assert response.status_code in (200, 201), response.get_data(as_text=True)


def subscribe(client: FlaskClient, member: Member, serial: int) -> TestResponse:
    body = json.dumps({"national_id": national_id(serial)}).encode()
    return signed(client, member, "POST", "/v1/subscriptions", body)


def watching(client: FlaskClient, member: Member, serial: int) -> str:
    """``member`` opens its own record on the borrower (its relationship) and subscribes."""
    accepted(submit(client, member, borrower_doc(member, serial, f"OWN-{member.code}-{serial}")))
    response = subscribe(client, member, serial)
    assert response.status_code == 201, response.get_data(as_text=True)
    ref: str = response.get_json()["ref"]
    return ref


def alerts_of(session: Session, code: str) -> list[dict[str, Any]]:
    session.expire_all()
    member = members.get(session, code)
    rows = session.scalars(
        select(Alert).where(Alert.institution_id == member.id).order_by(Alert.seq)
    ).all()
    session.commit()
    return [json.loads(r.body) for r in rows]


def add_webhook(session: Session, code: str, url: str = "https://hooks.example/b") -> None:
    now = dt.datetime.now(dt.UTC)
    member = members.get(session, code)
    session.add(Webhook(institution_id=member.id, url=url, created_at=now, updated_at=now))
    session.commit()


def count(session: Session, model: Any) -> int:
    session.expire_all()
    n = session.scalar(select(func.count()).select_from(model)) or 0
    session.commit()
    return n


# --- which events ------------------------------------------------------------------------


def record(contact: str, stage: str, tier: str) -> Delinquency:
    return Delinquency(contact_status=contact, collection_stage=stage, classification=tier)


def test_events_follow_the_transitions_not_the_states() -> None:
    was = RecordState("reachable", "reminder", "special_mention")
    now_lost = record("lost_contact", "legal_action", "loss")
    assert events_for("open", None, now_lost) == [AlertType.NEW_DELINQUENCY_ELSEWHERE]
    assert events_for("update", was, now_lost) == [
        AlertType.LOST_CONTACT,
        AlertType.LEGAL_ACTION,
        AlertType.CLASSIFICATION_WORSENED,
    ]
    still = RecordState("lost_contact", "legal_action", "loss")
    assert events_for("correct", still, now_lost) == []
    better = record("reachable", "repayment_plan", "normal")
    assert events_for("update", was, better) == []
    assert events_for("payment", was, now_lost) == []
    assert events_for("settle", was, now_lost) == []


# --- who is alerted ----------------------------------------------------------------------


def test_a_new_delinquency_elsewhere_alerts_the_subscriber_with_masked_data_only(
    client: FlaskClient, bank: Member, watcher: Member, session: Session
) -> None:
    ref = watching(client, watcher, 7)
    doc = borrower_doc(bank, 7, "CARD-7777-0001", contact=LOST, collection_stage="legal_action")
    accepted(submit(client, bank, doc))

    [alert] = alerts_of(session, "BANKB")
    assert alert["type"] == "new_delinquency_elsewhere"
    assert alert["subscription"] == ref and alert["seq"] == 1 and alert["version"] == 1
    assert alert["borrower"] == {"national_id_masked": "110101********" + national_id(7)[-4:]}
    record = session.scalar(select(Delinquency).where(Delinquency.institution.has(code="BANKA")))
    assert record is not None
    assert alert["record"] == {
        "record_id": record.ref,
        "institution": "BANKA",
        "product": "credit_card",
        "classification": "special_mention",
        "contact_status": "lost_contact",
        "collection_stage": "legal_action",
    }
    text = json.dumps(alert, ensure_ascii=False)
    for secret in (national_id(7), "张三", "+8613800138000", "长安街", "CARD-7777", "10000"):
        assert secret not in text
    assert alerts_of(session, "BANKA") == []  # the reporter knows its own report


def test_updates_raise_one_alert_per_worsening_with_its_own_event_id(
    client: FlaskClient, bank: Member, watcher: Member, session: Session
) -> None:
    watching(client, watcher, 8)
    doc = borrower_doc(bank, 8, "LOAN-8")
    accepted(submit(client, bank, doc))
    accepted(submit(client, bank, update(doc, 2, contact=LOST)))
    accepted(submit(client, bank, update(doc, 3, contact=LOST, collection_stage="legal_action")))
    worse = {"contact": LOST, "collection_stage": "legal_action", **overdue(100)}
    accepted(submit(client, bank, update(doc, 4, kind="correct", **worse)))
    # Improvements and repeats raise nothing.
    accepted(submit(client, bank, update(doc, 5, contact={"status": "reachable"}, **overdue(100))))

    got = alerts_of(session, "BANKB")
    assert [a["type"] for a in got] == [
        "new_delinquency_elsewhere",
        "lost_contact",
        "legal_action",
        "classification_worsened",
    ]
    assert [a["seq"] for a in got] == [1, 2, 3, 4]
    assert len({a["event_id"] for a in got}) == 4
    worse = got[3]["record"]
    assert (worse["previous_classification"], worse["classification"]) == (
        "special_mention",
        "substandard",
    )


def test_one_update_can_raise_several_alerts(
    client: FlaskClient, bank: Member, watcher: Member, session: Session
) -> None:
    watching(client, watcher, 9)
    doc = borrower_doc(bank, 9, "LOAN-9")
    accepted(submit(client, bank, doc))
    changes = {"contact": LOST, "collection_stage": "legal_action", **overdue(200)}
    accepted(submit(client, bank, update(doc, 2, **changes)))
    assert [a["type"] for a in alerts_of(session, "BANKB")][1:] == [
        "lost_contact",
        "legal_action",
        "classification_worsened",
    ]


def test_no_alert_without_a_subscription_or_for_another_borrower(
    client: FlaskClient, bank: Member, watcher: Member, session: Session
) -> None:
    watching(client, watcher, 10)
    accepted(submit(client, watcher, borrower_doc(watcher, 11, "OWN-11")))  # related, unsubscribed
    accepted(submit(client, bank, borrower_doc(bank, 11, "A-11")))
    accepted(submit(client, bank, borrower_doc(bank, 12, "A-12")))
    assert alerts_of(session, "BANKB") == []


def test_the_reporters_own_subscription_is_not_alerted(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    watching(client, bank, 13)
    doc = borrower_doc(bank, 13, "OWN-BANKA-13")
    accepted(submit(client, bank, update(doc, 2, contact=LOST)))
    accepted(submit(client, bank, borrower_doc(bank, 13, "SECOND-13")))
    assert alerts_of(session, "BANKA") == []


def test_a_subscription_whose_relationship_ended_gets_no_alert_and_ends(
    client: FlaskClient, bank: Member, watcher: Member, session: Session
) -> None:
    watching(client, watcher, 14)
    accepted(submit(client, watcher, withdraw(borrower_doc(watcher, 14, "OWN-BANKB-14"))))

    accepted(submit(client, bank, borrower_doc(bank, 14, "A-14")))
    assert alerts_of(session, "BANKB") == []
    session.expire_all()
    [sub] = session.scalars(select(Subscription)).all()
    assert sub.ended_at is not None and sub.end_reason == "relationship_ended"


def test_a_suspended_subscriber_is_not_alerted(
    client: FlaskClient, bank: Member, watcher: Member, session: Session
) -> None:
    watching(client, watcher, 15)
    members.suspend(session, "BANKB", dt.datetime.now(dt.UTC))
    session.commit()
    accepted(submit(client, bank, borrower_doc(bank, 15, "A-15")))
    assert alerts_of(session, "BANKB") == []


def test_a_live_consent_is_a_relationship_and_its_revocation_ends_it(
    client: FlaskClient,
    bank: Member,
    watcher: Member,
    session: Session,
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    material = load_key_material(settings)
    index = material.blind_index.digest("national_id", national_id(16))
    now = dt.datetime.now(dt.UTC)
    consent = consents.attest_written(
        session,
        Policy(),
        institution_id=members.get(session, "BANKB").id,
        borrower_index=index,
        reference="FORM-16",
        form_sha256="a" * 64,
        signed_on=TODAY,
        now=now,
    )
    session.commit()
    assert subscribe(client, watcher, 16).status_code == 201
    accepted(submit(client, bank, borrower_doc(bank, 16, "A-16")))
    assert [a["type"] for a in alerts_of(session, "BANKB")] == ["new_delinquency_elsewhere"]

    consents.revoke(session, borrower_index=index, consent_ref=consent.ref, now=now)
    session.commit()
    assert alerts.housekeeping(sessions, Policy(), now).subscriptions_ended == 1
    assert alerts.housekeeping(sessions, Policy(), now).subscriptions_ended == 0
    session.expire_all()
    assert session.scalars(select(Subscription.end_reason)).all() == ["relationship_ended"]


# --- transactions, outbox, clearing ------------------------------------------------------


def test_alerts_and_outbox_rows_commit_with_the_report_or_not_at_all(
    client: FlaskClient,
    bank: Member,
    watcher: Member,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watching(client, watcher, 17)
    add_webhook(session, "BANKB")

    def fail(*_: Any, **__: Any) -> Any:
        raise RuntimeError("crash after the alerts were written")

    with monkeypatch.context() as patch:
        patch.setattr(Intake, "_record", fail)
        assert submit(client, bank, borrower_doc(bank, 17, "A-17")).status_code == 500
    assert (count(session, Alert), count(session, AlertDelivery)) == (0, 0)

    accepted(submit(client, bank, borrower_doc(bank, 17, "A-17")))
    assert (count(session, Alert), count(session, AlertDelivery)) == (1, 1)
    session.expire_all()
    delivery = session.scalars(select(AlertDelivery)).one()
    assert (delivery.state, delivery.attempts) == ("pending", 0)


def test_no_outbox_row_without_a_webhook(
    client: FlaskClient, bank: Member, watcher: Member, session: Session
) -> None:
    watching(client, watcher, 18)
    accepted(submit(client, bank, borrower_doc(bank, 18, "A-18")))
    assert (count(session, Alert), count(session, AlertDelivery)) == (1, 0)


def test_clearing_the_record_removes_its_alerts_and_pending_deliveries(
    client: FlaskClient, bank: Member, watcher: Member, session: Session
) -> None:
    watching(client, watcher, 19)
    add_webhook(session, "BANKB")
    doc = borrower_doc(bank, 19, "A-19")
    accepted(submit(client, bank, doc))
    assert count(session, AlertDelivery) == 1
    settle = {
        "version": 1,
        "report_id": f"{doc['report_id']}-s",
        "institution": "BANKA",
        "account_ref": "A-19",
        "sequence": 2,
        "kind": "settle",
        "settlement": {"type": "paid_in_full", "date": TODAY.isoformat()},
    }
    accepted(submit(client, bank, settle))
    assert (count(session, Alert), count(session, AlertDelivery)) == (0, 0)


def test_housekeeping_drops_alerts_past_the_retention_period(
    client: FlaskClient,
    bank: Member,
    watcher: Member,
    session: Session,
    sessions: sessionmaker[Session],
) -> None:
    watching(client, watcher, 20)
    accepted(submit(client, bank, borrower_doc(bank, 20, "A-20")))
    policy = Policy(alert_retention_days=30)
    now = dt.datetime.now(dt.UTC)
    assert alerts.housekeeping(sessions, policy, now + dt.timedelta(days=29)).alerts_deleted == 0
    assert alerts.housekeeping(sessions, policy, now + dt.timedelta(days=31)).alerts_deleted == 1
    assert count(session, Alert) == 0


def test_housekeeping_agrees_with_has_relationship(
    client: FlaskClient, watcher: Member, session: Session, sessions: sessionmaker[Session]
) -> None:
    """The sweeper ends exactly the subscriptions ``has_relationship`` no longer supports."""
    for serial in (21, 22):
        watching(client, watcher, serial)
    accepted(submit(client, watcher, withdraw(borrower_doc(watcher, 22, "OWN-BANKB-22"))))
    now = dt.datetime.now(dt.UTC)
    assert alerts.housekeeping(sessions, Policy(), now).subscriptions_ended == 1
    session.expire_all()
    member = members.get(session, "BANKB")
    for sub in session.scalars(select(Subscription)):
        assert sub.is_live == has_relationship(session, member.id, sub.borrower_index, now)
    assert sorted(s.is_live for s in session.scalars(select(Subscription))) == [False, True]


# --- ordering under concurrency ----------------------------------------------------------


def test_concurrent_reports_give_each_subscriber_gapless_sequences(
    app: Flask, session: Session, watcher: Member
) -> None:
    reporters = [admit(session, f"BANK{n}") for n in range(4)]
    client = app.test_client()
    watching(client, watcher, 23)
    errors: list[str] = []

    def report(member: Member) -> None:
        local = app.test_client()
        for k in range(3):
            response = submit(local, member, borrower_doc(member, 23, f"C-{k}"))
            if response.status_code != 201:
                errors.append(response.get_data(as_text=True))

    threads = [threading.Thread(target=report, args=(m,)) for m in reporters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    got = alerts_of(session, "BANKB")
    assert sorted(a["seq"] for a in got) == list(range(1, 13))


def test_a_batch_numbers_its_alerts_and_a_refused_report_leaves_none(
    client: FlaskClient,
    bank: Member,
    watcher: Member,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watching(client, watcher, 24)
    docs = [borrower_doc(bank, 24, f"B-{k}") for k in range(4)]
    docs[2]["report_id"] += "-boom"
    original = Intake._record

    def refuse_after_the_alerts(self: Intake, *args: Any) -> Any:
        report = args[4]
        if report.report_id.endswith("-boom"):
            raise Conflict("refused after its alerts were written", code="test_refusal")
        return original(self, *args)

    monkeypatch.setattr(Intake, "_record", refuse_after_the_alerts)
    raw = [envelope(bank, d).decode() for d in docs]
    body = json.dumps({"envelopes": raw}).encode()
    response = signed(client, bank, "POST", "/v1/reports/batch", body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [r["status"] for r in response.get_json()["results"]] == [201, 201, 409, 201]
    got = alerts_of(session, "BANKB")
    assert [a["seq"] for a in got] == [1, 2, 3]
    accepted_refs = session.scalars(
        select(Delinquency.ref).where(Delinquency.institution.has(code="BANKA"))
    ).all()
    assert sorted(a["record"]["record_id"] for a in got) == sorted(accepted_refs)
    assert count(session, Alert) == 3


@pytest.mark.postgresql_only  # SQLite serialises every writer anyway (BEGIN IMMEDIATE)
def test_no_member_counter_is_locked_before_the_report_commits(
    app: Flask,
    bank: Member,
    watcher: Member,
    session: Session,
    settings: Settings,
    engine: Engine,
) -> None:
    """Counters are locked only at commit, so reports never queue behind a long transaction."""
    client = app.test_client()
    watching(client, watcher, 25)
    accepted(submit(client, bank, borrower_doc(bank, 25, "L-0")))  # the counter row exists now
    intake = Intake(load_key_material(settings), Policy())
    member = members.get(session, "BANKB")
    session.commit()
    doc = borrower_doc(bank, 25, "L-1")
    with Session(engine) as writer:
        reporter = members.get(writer, "BANKA")
        intake.submit_in_batch(
            writer, reporter, envelope(bank, doc), dt.datetime.now(dt.UTC)
        )  # written, not committed
        with engine.connect() as other:
            other.execute(text("SET lock_timeout = '1s'"))
            seq = other.execute(
                text("SELECT last_seq FROM alert_streams WHERE institution_id = :m FOR UPDATE"),
                {"m": member.id},
            ).scalar()
            assert seq == 1
            other.rollback()
        writer.commit()
    assert [a["seq"] for a in alerts_of(session, "BANKB")] == [1, 2]


def test_the_borrower_can_be_told_who_watches_them(
    client: FlaskClient, bank: Member, watcher: Member, session: Session, settings: Settings
) -> None:
    ref = watching(client, watcher, 26)
    accepted(submit(client, bank, borrower_doc(bank, 26, "A-26")))
    signed(client, watcher, "DELETE", f"/v1/subscriptions/{ref}")
    index = load_key_material(settings).blind_index.digest("national_id", national_id(26))
    [seen] = alerts.watchers_of(session, index)
    assert (seen.institution, seen.alerts) == ("BANKB", 1) and seen.ended_at is not None
    other = load_key_material(settings).blind_index.digest("national_id", national_id(27))
    assert alerts.watchers_of(session, other) == []
