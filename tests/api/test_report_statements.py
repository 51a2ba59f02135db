"""What a single open report costs in statements: the round trips are most of its time on
PostgreSQL, so they are counted here (never timed)."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, Table, event, func, select
from sqlalchemy.orm import Session

from factories import Member, admit, envelope, national_id, payload, signed
from registry import authn, bulk, intake
from registry.models import Borrower, DataKey, Delinquency, Report, RequestNonce


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture(autouse=True)
def no_nonce_purge(monkeypatch: pytest.MonkeyPatch) -> None:
    """One request in a hundred also purges expired nonces: one statement more, by chance."""
    monkeypatch.setattr(authn, "purge_due", lambda: False)


def open_report(
    client: FlaskClient, bank: Member, account: str, borrower: int, **overrides: Any
) -> Any:
    doc = payload(bank, account_ref=account, **overrides)
    doc["borrower"]["national_id"] = national_id(borrower)
    return signed(client, bank, "POST", "/v1/reports", envelope(bank, doc))


PARAMETERS: dict[str, int] = {}
ALONE: dict[str, bool] = {}
"""Whether the statement committed by itself (PostgreSQL's autocommit) when it was sent."""


def statements_of(app: Flask, send: Any, status: int = 201) -> list[str]:
    engine: Engine = app.extensions["registry"].engine
    seen: list[str] = []

    def note(conn: Any, _cursor: Any, sql: str, parameters: Any, *_args: Any) -> None:
        seen.append(" ".join(sql.split()))
        PARAMETERS[seen[-1]] = len(parameters) if isinstance(parameters, dict) else -1
        ALONE[seen[-1]] = bool(getattr(conn.connection.driver_connection, "autocommit", False))

    event.listen(engine, "before_cursor_execute", note)
    try:
        answer = send()
        assert answer.status_code == status, answer.get_data(as_text=True)
    finally:
        event.remove(engine, "before_cursor_execute", note)
    return seen


def count(session: Session, entity: Any) -> int:
    session.rollback()  # a fresh snapshot
    return session.scalar(select(func.count()).select_from(entity)) or 0


@pytest.mark.postgresql_only
def test_an_open_is_a_look_up_and_one_write_each_committing_alone_on_postgresql(
    app: Flask, client: FlaskClient, bank: Member, session: Session
) -> None:
    """Five round trips (BEGIN, nonce, look-up, writes, COMMIT) become two: the nonce goes
    in the statement that writes the report, and neither statement needs a transaction."""
    assert open_report(client, bank, "WARM-0001", 9).status_code == 201  # the key is known
    new_borrower = statements_of(app, lambda: open_report(client, bank, "ACCT-0001", 1))
    known_borrower = statements_of(app, lambda: open_report(client, bank, "ACCT-0002", 1))
    for seen in (new_borrower, known_borrower):
        assert len(seen) == 2, seen
        look_up, write = seen
        assert look_up.startswith("SELECT")
        assert write.startswith("WITH guard AS (INSERT INTO request_nonces")
        assert "INSERT INTO reports" in write
        assert "INSERT INTO delinquencies" in write
        assert ALONE[look_up] and ALONE[write]
        # psycopg parses a statement with more than 50 parameters again at every execution
        assert PARAMETERS[write] <= 50
    assert "INSERT INTO borrowers" in new_borrower[1]
    assert "INSERT INTO borrowers" not in known_borrower[1]
    # Other values, the same text (what shares a parameter never depends on the data), so
    # that psycopg and PostgreSQL prepare it once: here a day past due equals the sequence.
    today = dt.datetime.now(dt.UTC).date().isoformat()
    other_values = statements_of(
        app,
        lambda: open_report(
            client,
            bank,
            "ACCT-0003",
            2,
            days_past_due=1,
            first_delinquency_date=today,
            overdue_principal="1.00",
            overdue_interest="0.00",
            penalty="0.00",
        ),
    )
    assert other_values[1] == new_borrower[1]
    assert count(session, Borrower) == 3
    assert count(session, Delinquency) == 4
    assert count(session, Report) == 4
    assert count(session, RequestNonce) == 4
    # A data key per borrower and per record, each referenced.
    assert count(session, DataKey) == 7


@pytest.mark.postgresql_only
def test_an_open_after_a_read_goes_on_in_the_transaction_the_read_began(
    app: Flask, client: FlaskClient, bank: Member
) -> None:
    """The first request of a key this worker does not know reads the key first: the nonce,
    look-up and writes then follow in that transaction, as on SQLite."""
    seen = statements_of(app, lambda: open_report(client, bank, "ACCT-0001", 1))
    writes = [s for s in seen if s.startswith(("INSERT", "WITH"))]
    assert len(writes) == 2, writes
    assert writes[0].startswith("INSERT INTO request_nonces")
    assert "INSERT INTO reports" in writes[1] and "request_nonces" not in writes[1]
    assert not any(ALONE[s] for s in seen)


@pytest.mark.sqlite_only
def test_an_open_on_sqlite_is_one_transaction_whose_first_write_is_the_nonce(
    app: Flask, client: FlaskClient, bank: Member
) -> None:
    assert open_report(client, bank, "WARM-0001", 9).status_code == 201
    seen = statements_of(app, lambda: open_report(client, bank, "ACCT-0001", 1))
    assert seen[0].startswith("INSERT INTO request_nonces"), seen
    assert [s.split(" (")[0] for s in seen[2:]] == [
        "INSERT INTO data_keys",
        "INSERT INTO borrowers",
        "INSERT INTO delinquencies",
        "INSERT INTO reports",
    ]


def test_a_new_report_under_a_used_nonce_writes_nothing(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    """The nonce guards the report's rows (on PostgreSQL, in the same statement): a request
    whose nonce was used is refused as a replay, whatever it carries, and leaves no row."""
    assert open_report(client, bank, "WARM-0001", 9).status_code == 201  # the key is known
    doc = payload(bank, account_ref="FIRST-0001")
    first = signed(client, bank, "POST", "/v1/reports", envelope(bank, doc), nonce="n" * 24)
    assert first.status_code == 201
    other = payload(bank, account_ref="SECOND-0001")
    again = signed(client, bank, "POST", "/v1/reports", envelope(bank, other), nonce="n" * 24)
    assert again.status_code == 401
    assert again.get_json()["code"] == "request_replayed"
    assert count(session, Delinquency) == 2
    assert count(session, Report) == 2
    assert count(session, RequestNonce) == 2


@pytest.mark.postgresql_only
def test_a_race_lost_in_the_one_statement_is_answered_by_the_usual_path(
    app: Flask,
    client: FlaskClient,
    bank: Member,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A unique key that refuses the one statement (here the record's id, as if another
    request had taken it) rolls back the nonce with the rows: the usual path then writes the
    nonce and the report in a transaction, as if the one statement had never been tried."""
    assert open_report(client, bank, "WARM-0001", 9).status_code == 201
    taken = session.scalar(select(Delinquency.id))
    assert taken is not None
    session.rollback()
    real, calls = bulk.ids_from, []

    def clashing(dialect: str, values: Any, counts: Any) -> list[list[int]]:
        ids = real(dialect, values, counts)
        calls.append(ids)
        if len(calls) == 1:
            ids[2] = [taken]
        return ids

    monkeypatch.setattr(bulk, "ids_from", clashing)
    seen = statements_of(app, lambda: open_report(client, bank, "ACCT-0001", 1))
    assert len(calls) == 2
    guarded = [s for s in seen if s.startswith("WITH guard AS")]
    assert len(guarded) == 1 and ALONE[guarded[0]]
    assert seen[seen.index(guarded[0]) + 1].startswith("INSERT INTO request_nonces")
    assert count(session, Delinquency) == 2
    assert count(session, Report) == 2
    assert count(session, RequestNonce) == 2


def test_a_parameter_named_for_another_rows_value_must_hold_that_value() -> None:
    """What shares a parameter is declared by the code that builds the rows; a row that does
    not hold the value it is declared to share is a bug, refused before anything is sent."""
    keys = cast(Table, DataKey.__table__)
    parts = [("key0", keys, {"id": 7}), ("key1", keys, {"id": 8})]
    with pytest.raises(ValueError, match=r"key1\.id"):
        intake._writes_in_one_statement(parts, same={("key1", "id"): ("key0", "id")})
    _, values = intake._writes_in_one_statement(
        [("key0", keys, {"id": 7}), ("key1", keys, {"id": 7})],
        same={("key1", "id"): ("key0", "id")},
    )
    assert values == {"key0_id": 7}


def test_a_report_that_draws_the_purge_also_forgets_expired_nonces(
    client: FlaskClient, bank: Member, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request in a hundred purges the nonces whose replay window has passed, whichever
    way its nonce was written (on PostgreSQL a plain open writes it with the report)."""
    assert open_report(client, bank, "WARM-0001", 9).status_code == 201  # the key is known
    long_ago = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    session.add(RequestNonce(keyid=bank.keyid, nonce="expired-long-ago-0001", expires_at=long_ago))
    session.commit()
    monkeypatch.setattr(authn, "purge_due", lambda: True)
    assert open_report(client, bank, "ACCT-0001", 1).status_code == 201
    session.rollback()
    kept = set(session.scalars(select(RequestNonce.nonce)))
    assert "expired-long-ago-0001" not in kept
    assert len(kept) == 2
