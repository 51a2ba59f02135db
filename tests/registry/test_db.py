"""Migrations and the head check, on every engine."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, create_engine, insert, inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError

from registry.db import (
    current_revision,
    head_revision,
    make_engine,
    require_head,
    statements_commit_alone,
)
from registry.errors import SchemaNotAtHead
from registry.models import Base
from registry.settings import Settings


def test_there_is_exactly_one_migration_head() -> None:
    from alembic.script import ScriptDirectory

    from registry.db import alembic_config

    assert len(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()) == 1


def test_migrations_create_every_mapped_table(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    assert current_revision(engine) == head_revision()
    require_head(engine)


def test_a_database_behind_the_head_is_refused_with_the_fix() -> None:
    empty = create_engine("sqlite://")
    with pytest.raises(SchemaNotAtHead, match="registry migrate"):
        require_head(empty)


def test_sqlite_runs_with_the_privacy_and_durability_pragmas(tmp_path: Path) -> None:
    settings = Settings(instance_path=tmp_path, database_url=f"sqlite:///{tmp_path}/p.db")
    engine = make_engine(settings)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA secure_delete")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    engine.dispose()


def test_a_failed_statement_never_shows_its_parameters(engine: Engine) -> None:
    """Whatever logs or shows a database error, the values it was sent are not in it."""
    borrowers = Base.metadata.tables["borrowers"]
    row = {
        "ref": "r" * 32,
        "id_index": b"blind-index-of-a-person-000000000",
        "data_key_id": 987_654_321,  # no such key: refused
        "national_id_ct": b"ciphertext-of-a-national-id",
        "created_at": dt.datetime(2026, 11, 24, tzinfo=dt.UTC),
    }
    with pytest.raises(IntegrityError) as raised, engine.begin() as conn:
        conn.execute(insert(borrowers), row)
    shown = str(raised.value)
    assert "hidden due to hide_parameters" in shown
    assert "blind-index" not in shown and "ciphertext" not in shown and "rrrr" not in shown


def nonces_seen_elsewhere(engine: Engine) -> int:
    with engine.connect() as other:
        return int(other.execute(text("SELECT count(*) FROM request_nonces")).scalar_one())


def insert_nonce(conn: Connection, nonce: str) -> None:
    conn.execute(
        text("INSERT INTO request_nonces (keyid, nonce, expires_at) VALUES ('k', :n, :at)"),
        {"n": nonce, "at": dt.datetime(2026, 11, 24, tzinfo=dt.UTC)},
    )


@pytest.mark.postgresql_only
def test_statements_commit_alone_on_postgresql_until_the_transaction_has_begun(
    engine: Engine,
) -> None:
    with engine.connect() as conn:
        conn.begin()
        with statements_commit_alone(conn) as alone:
            assert alone
            insert_nonce(conn, "committed-by-itself")
            assert nonces_seen_elsewhere(engine) == 1  # before the transaction ends
        conn.rollback()  # nothing to undo: it was committed alone
        assert nonces_seen_elsewhere(engine) == 1
        conn.begin()
        insert_nonce(conn, "in-the-transaction")
        with statements_commit_alone(conn) as alone:
            assert not alone  # the transaction has begun: it goes on as it is
            insert_nonce(conn, "also-in-the-transaction")
        assert nonces_seen_elsewhere(engine) == 1
        conn.rollback()
    assert nonces_seen_elsewhere(engine) == 1
    with engine.connect() as conn:  # the pooled connection is back in transactions
        conn.begin()
        insert_nonce(conn, "rolled-back")
        conn.rollback()
    assert nonces_seen_elsewhere(engine) == 1


@pytest.mark.sqlite_only
def test_statements_never_commit_alone_on_sqlite(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.begin()
        with statements_commit_alone(conn) as alone:
            assert not alone
            insert_nonce(conn, "in-the-transaction")
        conn.rollback()
    assert nonces_seen_elsewhere(engine) == 0


@pytest.mark.postgresql_only
def test_a_connection_lost_while_statements_commit_alone_is_never_pooled(
    engine: Engine,
) -> None:
    with engine.connect() as conn:
        conn.begin()
        with pytest.raises(OperationalError), statements_commit_alone(conn):
            conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        assert conn.invalidated
    with engine.connect() as conn:  # a new connection, in transactions again
        conn.begin()
        insert_nonce(conn, "rolled-back")
        conn.rollback()
    assert nonces_seen_elsewhere(engine) == 0
