"""What a single open report costs in statements: the round trips are most of its time on
PostgreSQL, so they are counted here (never timed)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from factories import Member, admit, envelope, national_id, payload, signed
from registry import authn
from registry.models import Borrower, DataKey, Delinquency, Report


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture(autouse=True)
def no_nonce_purge(monkeypatch: pytest.MonkeyPatch) -> None:
    """One request in a hundred also purges expired nonces: one statement more, by chance."""
    monkeypatch.setattr(authn, "purge_due", lambda: False)


def open_report(client: FlaskClient, bank: Member, account: str, borrower: int) -> Any:
    doc = payload(bank, account_ref=account)
    doc["borrower"]["national_id"] = national_id(borrower)
    return signed(client, bank, "POST", "/v1/reports", envelope(bank, doc))


PARAMETERS: dict[str, int] = {}


def statements_of(app: Flask, send: Any) -> list[str]:
    engine: Engine = app.extensions["registry"].engine
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, sql: str, parameters: Any, *_args: Any) -> None:
        seen.append(" ".join(sql.split()))
        PARAMETERS[seen[-1]] = len(parameters) if isinstance(parameters, dict) else -1

    event.listen(engine, "before_cursor_execute", note)
    try:
        assert send().status_code == 201
    finally:
        event.remove(engine, "before_cursor_execute", note)
    return seen


@pytest.mark.postgresql_only
def test_an_open_is_written_in_one_statement_on_postgresql(
    app: Flask, client: FlaskClient, bank: Member, session: Session
) -> None:
    assert open_report(client, bank, "WARM-0001", 9).status_code == 201  # the key is known
    new_borrower = statements_of(app, lambda: open_report(client, bank, "ACCT-0001", 1))
    known_borrower = statements_of(app, lambda: open_report(client, bank, "ACCT-0002", 1))
    for seen in (new_borrower, known_borrower):
        writes = [s for s in seen if s.startswith(("INSERT", "WITH"))]
        # The nonce, then every row of the open in one statement.
        assert len(writes) == 2, writes
        assert writes[0].startswith("INSERT INTO request_nonces")
        assert "INSERT INTO reports" in writes[1]
        assert "INSERT INTO delinquencies" in writes[1]
        assert len(seen) == 3, seen  # nonce, look-up, writes (BEGIN and COMMIT are not SQL)
        # psycopg parses a statement with more than 50 parameters again at every execution
        assert PARAMETERS[writes[1]] <= 50
    assert "INSERT INTO borrowers" in " ".join(new_borrower)
    assert "INSERT INTO borrowers" not in " ".join(known_borrower)
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Borrower)) == 2
    assert session.scalar(select(func.count()).select_from(Delinquency)) == 3
    assert session.scalar(select(func.count()).select_from(Report)) == 3
    # A data key per borrower and per record, each referenced.
    assert session.scalar(select(func.count()).select_from(DataKey)) == 5
