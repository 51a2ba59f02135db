"""A worker keeps the member keys it found valid (registry.authn.KnownKeys), and a revoked key
or suspended member is still refused at once: by the next request to any worker, whatever the
worker remembers. Each test first uses the key, so that the worker has it in memory."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from api import create_app
from conftest import Clock
from factories import Member, admit, envelope, payload, report_of_kind, signed
from registry import members
from registry.models import Institution, Report, RequestNonce, Tombstone
from registry.settings import Settings


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


def code_of(response: Any) -> tuple[int, str | None]:
    body = response.get_json(silent=True) or {}
    return response.status_code, body.get("code")


def get_receipt(client: FlaskClient, member: Member) -> Any:
    return signed(client, member, "GET", "/v1/receipts/does-not-exist")


def post_report(client: FlaskClient, member: Member, **overrides: Any) -> Any:
    """An open report for an account of its own (one per report id)."""
    doc = payload(member, **overrides)
    doc["account_ref"] = f"ACCT-{doc['report_id']}"
    return signed(client, member, "POST", "/v1/reports", envelope(member, doc))


def reports_stored(session: Session) -> int:
    session.rollback()  # a fresh snapshot
    return session.scalar(select(func.count()).select_from(Report)) or 0


@pytest.fixture
def other_worker(settings: Settings, engine: Engine, clock: Clock) -> Iterator[FlaskClient]:
    """A second app on the same database: another gunicorn worker, or another host."""
    application = create_app(settings, clock=clock)
    application.config["TESTING"] = True
    yield application.test_client()
    application.extensions["registry"].engine.dispose()


def test_a_key_revoked_after_use_is_refused_at_once(
    client: FlaskClient, bank: Member, session: Session, clock: Clock
) -> None:
    assert post_report(client, bank).status_code == 201
    assert code_of(get_receipt(client, bank)) == (404, "receipt_not_found")
    members.revoke_key(session, bank.keyid, clock())
    session.commit()
    assert code_of(get_receipt(client, bank)) == (401, "key_revoked")
    assert code_of(post_report(client, bank, report_id="after-revocation")) == (401, "key_revoked")
    assert reports_stored(session) == 1


def test_a_revocation_made_through_another_worker_is_seen_by_this_one(
    client: FlaskClient,
    other_worker: FlaskClient,
    bank: Member,
    session: Session,
    clock: Clock,
) -> None:
    assert post_report(client, bank).status_code == 201
    assert post_report(other_worker, bank, report_id="second-worker-0001").status_code == 201
    members.revoke_key(session, bank.keyid, clock())
    session.commit()
    for worker in (client, other_worker):
        response = post_report(worker, bank, report_id="refused-everywhere")
        assert code_of(response) == (401, "key_revoked")
    assert reports_stored(session) == 2


def test_a_revocation_scheduled_for_later_takes_effect_at_its_time(
    client: FlaskClient, bank: Member, session: Session, clock: Clock
) -> None:
    members.revoke_key(session, bank.keyid, clock(), at=clock() + dt.timedelta(minutes=1))
    session.commit()
    assert post_report(client, bank).status_code == 201
    clock.advance(minutes=2)
    assert code_of(post_report(client, bank, report_id="too-late-report-0001")) == (
        401,
        "key_revoked",
    )


def test_a_member_suspended_after_use_is_refused_and_reinstated_is_let_in(
    client: FlaskClient, bank: Member, session: Session, clock: Clock
) -> None:
    assert post_report(client, bank).status_code == 201
    members.suspend(session, "BANKA", clock())
    session.commit()
    assert code_of(get_receipt(client, bank)) == (403, "member_suspended")
    assert code_of(post_report(client, bank, report_id="while-suspended")) == (
        403,
        "member_suspended",
    )
    members.reinstate(session, "BANKA")
    session.commit()
    assert code_of(get_receipt(client, bank)) == (404, "receipt_not_found")
    assert reports_stored(session) == 1


def test_a_known_key_revoked_is_refused_before_its_envelope_is_judged(
    client: FlaskClient, bank: Member, session: Session, clock: Clock
) -> None:
    """The report view checks the envelope before its first write; a revoked caller must not
    learn anything about its envelope (malformed, or refused by the rules)."""
    assert post_report(client, bank).status_code == 201
    members.revoke_key(session, bank.keyid, clock())
    session.commit()
    before = refusals_counted()
    malformed = signed(client, bank, "POST", "/v1/reports", b'{"payloadType": 1}')
    assert code_of(malformed) == (401, "key_revoked")
    # Counted as what was answered, not as the envelope's fault.
    assert refusals_counted() - before == Counter({"key_revoked": 1})
    overdue = post_report(client, bank, report_id="bad-amount-report-0001", penalty="999999.00")
    assert code_of(overdue) == (401, "key_revoked")


def refusals_counted() -> Counter[str]:
    """Reports refused so far, by reason (this process's metrics)."""
    counted: Counter[str] = Counter()
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "registry_reports_total" and sample.labels["outcome"] == "refused":
                counted[sample.labels["reason"]] += int(sample.value)
    return counted


def test_a_refused_envelope_still_gets_its_refusal_while_the_key_is_valid(
    client: FlaskClient, bank: Member
) -> None:
    assert post_report(client, bank).status_code == 201
    malformed = signed(client, bank, "POST", "/v1/reports", b'{"payloadType": 1}')
    assert code_of(malformed) == (400, "envelope_malformed")


def test_a_known_key_needs_no_key_look_up(app: Flask, client: FlaskClient, bank: Member) -> None:
    """What the worker remembers spares a statement per request (the nonce's statement still
    reads the key's state)."""
    statements: list[str] = []
    engine: Engine = app.extensions["registry"].engine

    def seen(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements.append(sql)

    assert post_report(client, bank).status_code == 201
    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert post_report(client, bank, report_id="second-report-0001").status_code == 201
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    reads_of_keys = [s for s in statements if "FROM member_keys" in s and "INSERT" not in s]
    assert reads_of_keys == []
    assert any("INSERT INTO request_nonces" in s for s in statements)


def test_a_known_keys_detached_member_serves_every_kind_of_report(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    """The report view hands intake the worker's copy of the member, in no session: an open,
    an update and a settlement (which clears the record) all read it as they need."""
    life = [
        report_of_kind(bank, account_ref="LIFE-0001", kind=kind, sequence=sequence)
        for sequence, kind in enumerate(("open", "update", "settle"), start=1)
    ]
    assert signed(client, bank, "GET", "/v1/receipts/warm-up").status_code == 404  # key kept
    answers = [signed(client, bank, "POST", "/v1/reports", envelope(bank, doc)) for doc in life]
    assert [a.status_code for a in answers] == [201, 201, 201], answers[-1].get_data()
    session.rollback()
    member_id = session.scalar(select(Institution.id).where(Institution.code == "BANKA"))
    assert session.scalars(select(Tombstone.institution_id)).all() == [member_id]
    assert set(session.scalars(select(Report.institution_id))) == {member_id}


def test_a_replay_to_another_worker_is_refused(
    client: FlaskClient, other_worker: FlaskClient, bank: Member, session: Session
) -> None:
    raw = envelope(bank, payload(bank))
    nonce = "replayed-across-workers-0123"
    assert signed(client, bank, "POST", "/v1/reports", raw, nonce=nonce).status_code == 201
    replay = signed(other_worker, bank, "POST", "/v1/reports", raw, nonce=nonce)
    assert code_of(replay) == (401, "request_replayed")
    session.rollback()
    assert session.scalar(select(func.count()).select_from(RequestNonce)) == 1


def test_a_known_key_revoked_gets_401_for_a_malformed_batch_too(
    client: FlaskClient, bank: Member, session: Session, clock: Clock
) -> None:
    """Any view that checks before its first write is covered: the refusal is confirmed where
    every refusal is answered (api.errors), not by each view."""
    assert post_report(client, bank).status_code == 201
    assert code_of(signed(client, bank, "POST", "/v1/reports/batch", b"[]"))[0] == 400
    members.revoke_key(session, bank.keyid, clock())
    session.commit()
    refused = signed(client, bank, "POST", "/v1/reports/batch", b"[]")
    assert code_of(refused) == (401, "key_revoked")
    assert refused.headers["WWW-Authenticate"].startswith("Signature")
