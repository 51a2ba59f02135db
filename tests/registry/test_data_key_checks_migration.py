"""Every reference to a data key is still enforced after 0009 turned them into triggers on
PostgreSQL (SQLite keeps its foreign keys): a key in use cannot be deleted, a row cannot name a
key that does not exist, and neither slips through when the two happen at once."""

from __future__ import annotations

import datetime as dt
import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from conftest import migrate
from factories import admit, filler_row
from registry.models import Base, Borrower, DataKey, Delinquency

REFERRING = tuple(
    sorted(
        table.name
        for table in Base.metadata.sorted_tables
        if any(fk.column.table.name == "data_keys" for fk in table.foreign_keys)
    )
)
"""Every table whose rows name a data key, from the models."""


def test_the_migration_covers_every_table_that_names_a_data_key() -> None:
    path = Path(__file__).parents[2] / "migrations/versions"
    spec = importlib.util.spec_from_file_location(
        "migration_0009", path / "0009_data_key_references_checked_per_statement.py"
    )
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert sorted(migration.REFERRING) == list(REFERRING)
    assert len(REFERRING) == 8


NOW = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
MISSING = 987_654_321


def test_the_tables_listed_are_every_reference_to_a_data_key() -> None:
    declared = {
        fk.parent.table.name
        for table in Base.metadata.sorted_tables
        for fk in table.foreign_keys
        if fk.column.table.name == "data_keys"
    }
    assert declared == set(REFERRING)


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def _new_key(conn: Connection, serial: int) -> int:
    return int(
        conn.execute(
            insert(_table("data_keys"))
            .values(ref=f"k{serial}", master_version=1, wrapped=b"w" * 60, created_at=NOW)
            .returning(_table("data_keys").c.id)
        ).scalar_one()
    )


@pytest.fixture
def owners(engine: Engine, session: Session) -> Iterator[dict[str, int]]:
    """A member, a borrower and a record for the rows under test to belong to."""
    admit(session, "BANKA")
    with engine.begin() as conn:
        refs = {"institutions": int(conn.scalar(text("SELECT min(id) FROM institutions")) or 0)}
        for n, name in enumerate(("borrowers", "delinquencies"), start=1):
            refs["data_keys"] = _new_key(conn, n)
            table = _table(name)
            refs[name] = int(
                conn.execute(
                    insert(table).values(filler_row(table, refs, n)).returning(table.c.id)
                ).scalar_one()
            )
    yield refs


@pytest.mark.parametrize("name", REFERRING)
def test_a_key_in_use_stays_and_a_row_names_only_a_key_that_exists(
    engine: Engine, owners: dict[str, int], name: str
) -> None:
    table, keys = _table(name), _table("data_keys")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(table).values(filler_row(table, owners | {"data_keys": MISSING}, 10)))
    with engine.begin() as conn:
        used = _new_key(conn, 11)
        row_id = conn.execute(
            insert(table)
            .values(filler_row(table, owners | {"data_keys": used}, 11))
            .returning(table.c.id)
        ).scalar_one()
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(delete(keys).where(keys.c.id == used))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == row_id).values(data_key_id=MISSING))
    with engine.connect() as conn:
        assert conn.scalar(select(keys.c.id).where(keys.c.id == used)) == used
    # Both in one statement, or the row first: the key goes.
    with engine.begin() as conn:
        conn.execute(delete(table).where(table.c.id == row_id))
        conn.execute(delete(keys).where(keys.c.id == used))
        assert conn.scalar(select(func.count()).where(keys.c.id == used)) == 0


def _waiting_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        )


def _in_thread(engine: Engine, statement: Any) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``statement`` in its own transaction in a thread; what it raised goes in the list."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            with engine.begin() as conn:
                conn.execute(statement)
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not _waiting_for_a_lock(engine):
        assert thread.is_alive() and time.monotonic() < deadline, "it never waited"
        time.sleep(0.02)
    return thread, raised


@pytest.mark.postgresql_only
def test_a_key_deleted_while_a_new_row_names_it_fails_one_of_them(
    engine: Engine, owners: dict[str, int]
) -> None:
    keys, statements = _table("data_keys"), _table("borrower_statements")
    with engine.begin() as conn:
        key = _new_key(conn, 20)
    # The row first, not yet committed: the delete waits for it, then sees it and fails.
    with engine.connect() as writer:
        writer.begin()
        row = filler_row(statements, owners | {"data_keys": key}, 20)
        writer.execute(insert(statements).values(row))
        thread, raised = _in_thread(engine, delete(keys).where(keys.c.id == key))
        writer.commit()
    thread.join(10)
    assert len(raised) == 1 and isinstance(raised[0], IntegrityError)

    # The delete first, not yet committed: the new row waits for it, then finds no key.
    with engine.begin() as conn:
        other = _new_key(conn, 21)
    with engine.connect() as deleter:
        deleter.begin()
        deleter.execute(delete(keys).where(keys.c.id == other))
        row = filler_row(statements, owners | {"data_keys": other}, 21)
        thread, raised = _in_thread(engine, insert(statements).values(row))
        deleter.commit()
    thread.join(10)
    assert len(raised) == 1 and isinstance(raised[0], IntegrityError)
    with engine.connect() as conn:
        named = select(func.count()).where(statements.c.data_key_id.in_([key, other]))
        assert conn.scalar(named) == 1  # the first row, whose key stayed
        assert conn.scalar(select(func.count()).where(keys.c.id == key)) == 1


@pytest.mark.postgresql_only
def test_keys_are_deleted_in_read_committed_only(engine: Engine, owners: dict[str, int]) -> None:
    """A repeatable-read snapshot could miss a row committed since: refused, not trusted."""
    keys = _table("data_keys")
    with engine.begin() as conn:
        unused = _new_key(conn, 30)
    with (
        pytest.raises(DBAPIError, match="READ COMMITTED"),
        engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn,
        conn.begin(),
    ):
        conn.execute(delete(keys).where(keys.c.id == unused))
    with engine.begin() as conn:
        conn.execute(delete(keys).where(keys.c.id == unused))


@pytest.mark.postgresql_only
def test_data_keys_keep_their_ids_and_are_not_truncated_while_used(
    engine: Engine, owners: dict[str, int]
) -> None:
    keys = _table("data_keys")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(update(keys).where(keys.c.id == owners["data_keys"]).values(id=MISSING))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("TRUNCATE data_keys"))
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(DataKey)) == 2


def _checked_by(engine: Engine) -> tuple[set[str], set[str]]:
    """The tables whose reference to a data key is a foreign key, and those with the triggers."""
    inspector = inspect(engine)
    keyed = {
        table
        for table in inspector.get_table_names()
        for fk in inspector.get_foreign_keys(table)
        if fk["referred_table"] == "data_keys"
    }
    with engine.connect() as conn:
        triggered = set(
            conn.scalars(
                text(
                    "SELECT tgrelid::regclass::text FROM pg_trigger "
                    "WHERE tgname LIKE '%data_keys_exist' AND NOT tgisinternal"
                )
            )
        )
    return keyed, triggered


@pytest.mark.postgresql_only
def test_0009_goes_up_and_down(scratch: Engine) -> None:
    migrate(scratch, "upgrade", "head")
    assert _checked_by(scratch) == (set(), set(REFERRING))
    migrate(scratch, "downgrade", "0008")
    assert _checked_by(scratch) == (set(REFERRING), set())
    migrate(scratch, "upgrade", "head")
    assert _checked_by(scratch) == (set(), set(REFERRING))


def test_clearing_still_takes_the_record_and_its_keys_in_one_go(
    engine: Engine, owners: dict[str, int]
) -> None:
    """The record and both its keys can go in one transaction, the keys last."""
    with engine.begin() as conn:
        record = conn.execute(
            select(Delinquency.data_key_id, Borrower.data_key_id).join(Borrower)
        ).one()
        conn.execute(delete(_table("delinquencies")))
        conn.execute(delete(_table("borrowers")))
        conn.execute(delete(_table("data_keys")).where(_table("data_keys").c.id.in_(record)))
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(DataKey)) == 0
