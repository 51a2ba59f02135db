"""Concurrency: racing writers on one database lose nothing, double nothing and never deadlock.

Each racer is a thread with its own HTTP client (so its own database session), released at the
same instant by a barrier, against the same database, on SQLite and on PostgreSQL. A deadlock
or a unique-key race that escapes the retry would surface as a 500 and fail the test.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from conftest import Clock
from factories import Member, admit, envelope, inquire, national_id, payload, post_envelope, submit
from registry.clearing import Clearer
from registry.models import Borrower, Delinquency, QuotaUsage, Report, Tombstone
from registry.policy import Policy
from registry.secrets import load_key_material
from registry.settings import Settings

TODAY = dt.datetime.now(dt.UTC).date().isoformat()
ROUNDS = 3


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; return their results in order, or raise."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a racer hung (deadlock?)"
    if errors:
        raise errors[0]
    return results


def sender(app: Flask, member: Member, doc: dict[str, Any]) -> Callable[[], TestResponse]:
    raw = envelope(member, doc)
    return lambda: post_envelope(app.test_client(), member, raw)


def count(session: Session, model: Any, *where: Any) -> int:
    session.expire_all()
    n = session.scalar(select(func.count()).select_from(model).where(*where)) or 0
    session.commit()
    return int(n)


def later(doc: dict[str, Any], kind: str, sequence: int, **body: Any) -> dict[str, Any]:
    """A report after ``doc`` on the same account (no borrower or state: payment, settle)."""
    head = {k: doc[k] for k in ("version", "institution", "account_ref")}
    head.update(report_id=f"{doc['report_id']}-{sequence}", kind=kind, sequence=sequence)
    return {**head, **body}


def code_of(response: TestResponse) -> str:
    body = response.get_json(silent=True) or {}
    return f"{response.status_code} {body.get('code', '')}".strip()


def test_members_reporting_on_one_new_borrower_at_once_share_one_borrower(
    app: Flask, session: Session
) -> None:
    banks = [admit(session, f"BANK{c}") for c in "ABCD"]
    for round_ in range(ROUNDS):
        person = national_id(300 + round_)
        docs = [payload(b, account_ref=f"SAME-{round_}") for b in banks]
        for doc in docs:
            doc["borrower"] = {**doc["borrower"], "national_id": person}
        answers = race(*(sender(app, b, d) for b, d in zip(banks, docs, strict=True)))
        assert [a.status_code for a in answers] == [201] * len(banks), [
            a.get_data(as_text=True) for a in answers
        ]
    assert count(session, Borrower) == ROUNDS
    assert count(session, Delinquency) == ROUNDS * len(banks)


def test_the_same_envelope_sent_four_times_at_once_is_stored_once(
    app: Flask, session: Session
) -> None:
    bank = admit(session)
    for round_ in range(ROUNDS):
        doc = payload(bank, account_ref=f"DUP-{round_}")
        answers = race(*[sender(app, bank, doc)] * 4)
        assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
        assert len({a.get_data() for a in answers}) == 1, "two different receipts"
    assert count(session, Report) == ROUNDS and count(session, Delinquency) == ROUNDS


def test_racing_updates_of_one_account_lose_no_update(app: Flask, session: Session) -> None:
    bank = admit(session)
    doc = payload(bank, account_ref="RACE-1")
    assert submit(app.test_client(), bank, doc).status_code == 201
    updates = [
        {**doc, "report_id": f"{doc['report_id']}-{s}", "kind": "update", "sequence": s}
        for s in range(2, 8)
    ]
    answers = race(*(sender(app, bank, u) for u in updates))
    outcomes = {u["sequence"]: code_of(a) for u, a in zip(updates, answers, strict=True)}
    assert set(outcomes.values()) <= {"201", "409 sequence_stale"}, outcomes
    accepted = [s for s, o in outcomes.items() if o == "201"]
    record = session.scalars(select(Delinquency)).one()
    session.commit()
    assert record.sequence == max(accepted) == 7
    assert count(session, Report) == 1 + len(accepted)


def test_a_report_racing_its_own_settlement_never_revives_the_record(
    app: Flask, session: Session
) -> None:
    bank = admit(session)
    for round_ in range(ROUNDS):
        doc = payload(bank, account_ref=f"SETTLE-{round_}")
        assert submit(app.test_client(), bank, doc).status_code == 201
        update = {**doc, "report_id": f"{doc['report_id']}-2", "kind": "update", "sequence": 2}
        settle = later(doc, "settle", 3, settlement={"type": "paid_in_full", "date": TODAY})
        updated, settled = race(sender(app, bank, update), sender(app, bank, settle))
        assert settled.status_code == 201, settled.get_data(as_text=True)
        assert code_of(updated) in {"201", "409 account_cleared"}, code_of(updated)
    assert count(session, Delinquency) == 0
    # Only the settling reports stay, as receipts without a record (resends get them back).
    assert count(session, Report) == count(session, Report, Report.delinquency_id.is_(None))
    assert count(session, Report, Report.kind == "settle") == ROUNDS
    stones = session.scalars(select(Tombstone.last_sequence)).all()
    session.commit()
    assert sorted(stones) == [3] * ROUNDS


@pytest.fixture
def retention_app(settings: Settings, engine: Engine, clock: Clock) -> Iterator[Flask]:
    from api import create_app

    app = create_app(settings, clock=clock, policy=Policy(retention_days_after_settlement=30))
    yield app
    app.extensions["registry"].engine.dispose()


def test_two_sweepers_and_late_reports_at_once_clear_each_record_once(
    retention_app: Flask, session: Session, engine: Engine, settings: Settings
) -> None:
    bank = admit(session)
    client = retention_app.test_client()
    docs = []
    for i in range(12):
        doc = payload(bank, account_ref=f"SWEEP-{i}")
        doc["borrower"] = {**doc["borrower"], "national_id": national_id(400 + i % 5)}
        assert submit(client, bank, doc).status_code == 201
        settle = later(doc, "settle", 2, settlement={"type": "paid_in_full", "date": TODAY})
        assert submit(client, bank, settle).status_code == 201
        docs.append(doc)
    clearer = Clearer(load_key_material(settings), Policy(retention_days_after_settlement=30))
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    later_on = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)

    def sweep() -> int:
        return int(clearer.sweep(sessions, later_on, batch=3).cleared["retention"])

    def late_reports() -> list[str]:
        """Each settled account gets a payment while the sweepers clear it."""
        late = retention_app.test_client()
        paid = {"amount": "1.00", "date": TODAY}
        return [code_of(submit(late, bank, later(d, "payment", 3, payment=paid))) for d in docs]

    first, second, late = race(sweep, sweep, late_reports)
    assert first + second == len(docs), (first, second)
    assert set(late) <= {"409 account_settled", "409 account_cleared"}, late
    assert count(session, Delinquency) == 0 and count(session, Borrower) == 0
    assert count(session, Tombstone) == len(docs)
    assert clearer.sweep(sessions, later_on).total() == 0


@pytest.fixture
def quota_app(settings: Settings, engine: Engine, clock: Clock) -> Iterator[Flask]:
    from api import create_app

    app = create_app(settings, clock=clock, policy=Policy(inquiry_quota_overrides={"BANKA": 5}))
    yield app
    app.extensions["registry"].engine.dispose()


def test_concurrent_inquiries_use_the_daily_quota_exactly(
    quota_app: Flask, session: Session
) -> None:
    bank = admit(session)
    doc = payload(bank)
    assert submit(quota_app.test_client(), bank, doc).status_code == 201
    body = {"national_id": doc["borrower"]["national_id"], "purpose": "account_review"}
    answers = race(*[lambda: inquire(quota_app.test_client(), bank, body)] * 10)
    outcomes = sorted(code_of(a) for a in answers)
    assert outcomes == ["200"] * 5 + ["429 inquiry_quota_exhausted"] * 5, outcomes
    assert session.scalars(select(QuotaUsage.used)).all() == [5]
    session.commit()
