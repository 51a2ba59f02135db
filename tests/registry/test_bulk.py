"""registry.bulk: ids taken up front, rows written in one statement (or COPY) per table."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any, cast

import pytest
from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.bulk import column_types, copy_values, next_ids, write_rows
from registry.models import Borrower, DataKey

KEYS = cast(Table, DataKey.__table__)
BORROWERS = cast(Table, Borrower.__table__)
NOW = dt.datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=dt.UTC)


def _key_row(when: dt.datetime = NOW) -> dict[str, Any]:
    return {
        "ref": secrets.token_hex(16),
        "master_version": 1,
        "wrapped": secrets.token_bytes(40),
        "created_at": when,
    }


def _writer(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)


def insert_rows(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    """What a bulk writer does: number the rows up front, then write them in one go."""
    [ids] = next_ids(connection, [(table, len(rows))])
    for row, row_id in zip(rows, ids, strict=True):
        row["id"] = row_id
    write_rows(connection, table, rows)
    return ids


def test_rows_get_the_ids_returned_in_their_order_and_read_back_as_written(
    engine: Engine,
) -> None:
    rows = [_key_row(NOW + dt.timedelta(seconds=n)) for n in range(5)]
    with _writer(engine) as session:
        ids = insert_rows(session.connection(), KEYS, [dict(r) for r in rows])
        session.commit()
        stored = {k.id: k for k in session.scalars(select(DataKey))}
    assert ids == sorted(ids) and len(set(ids)) == 5
    for row_id, row in zip(ids, rows, strict=True):
        key = stored[row_id]
        assert (key.ref, key.wrapped, key.created_at) == (
            row["ref"],
            row["wrapped"],
            row["created_at"],
        )


def test_ids_never_collide_with_rows_the_engine_numbers_itself(engine: Engine) -> None:
    with _writer(engine) as session:
        session.add(DataKey(**_key_row()))
        session.flush()
        first = insert_rows(session.connection(), KEYS, [_key_row(), _key_row()])
        orm_row = DataKey(**_key_row())
        session.add(orm_row)
        session.flush()
        second = insert_rows(session.connection(), KEYS, [_key_row()])
        session.commit()
        all_ids = list(session.scalars(select(DataKey.id)))
    assert len(all_ids) == len(set(all_ids)) == 5
    assert orm_row.id not in first + second
    assert max(first) < orm_row.id < min(second)


def test_several_tables_are_numbered_in_one_statement(engine: Engine) -> None:
    with _writer(engine) as session:
        keys, borrowers = next_ids(session.connection(), [(KEYS, 3), (BORROWERS, 0)])
        more_keys, more_borrowers = next_ids(session.connection(), [(KEYS, 1), (BORROWERS, 2)])
    assert len(keys) == 3 and borrowers == [] and len(more_keys) == 1
    assert len(more_borrowers) == 2


def test_no_rows_write_nothing(engine: Engine) -> None:
    with _writer(engine) as session:
        assert insert_rows(session.connection(), KEYS, []) == []
        assert list(session.scalars(select(DataKey))) == []


def _borrower_row(key_id: int, id_index: bytes) -> dict[str, Any]:
    return {
        "ref": secrets.token_hex(16),
        "id_index": id_index,
        "data_key_id": key_id,
        "national_id_ct": secrets.token_bytes(40),
        "created_at": NOW,
    }


def test_a_unique_key_clash_is_an_integrity_error(engine: Engine) -> None:
    """Callers fall back on IntegrityError (a race with another writer); COPY must raise it."""
    clash = secrets.token_bytes(32)
    with _writer(engine) as session:
        [key_id] = insert_rows(session.connection(), KEYS, [_key_row()])
        insert_rows(session.connection(), BORROWERS, [_borrower_row(key_id, clash)])
        session.commit()
        with pytest.raises(IntegrityError):
            insert_rows(
                session.connection(),
                BORROWERS,
                [_borrower_row(key_id, secrets.token_bytes(32)), _borrower_row(key_id, clash)],
            )
        session.rollback()
        assert len(list(session.scalars(select(Borrower)))) == 1


def test_fixed_id_counts_leave_no_parameter_for_the_planner_to_guess() -> None:
    """PostgreSQL plans a prepared statement once only if its generic plan is no worse than
    a custom one; ``generate_series`` over a parameter is guessed at a thousand rows, which
    made the single report's look-up plan afresh at every execution (about 1 ms)."""
    from sqlalchemy.dialects import postgresql

    from registry.bulk import id_columns
    from registry.models import Delinquency

    tables = [cast(Table, DataKey.__table__), cast(Table, Delinquency.__table__)]
    fixed = select(*id_columns("postgresql", tables, fixed=[2, 1])).compile(
        dialect=postgresql.dialect()
    )
    assert "generate_series(1, 2)" in str(fixed) and "generate_series(1, 1)" in str(fixed)
    assert not [name for name in fixed.params if name.startswith(("ids_n", "generate_series"))]
    counted = select(*id_columns("postgresql", tables)).compile(dialect=postgresql.dialect())
    assert {"ids_n0", "ids_n1"} <= set(counted.params)


@pytest.mark.postgresql_only
def test_a_binary_copy_writes_bytes_and_times_exactly_as_given(engine: Engine) -> None:
    """Binary COPY types each column from the table: bytes that text COPY must escape (NUL,
    backslash, newline, tab) and a timestamp's microseconds come back unchanged."""
    columns = ("id", "ref", "master_version", "wrapped", "created_at")
    awkward = [b"\x00\\\n\t\r" + secrets.token_bytes(40), bytes(range(256)), b""]
    with _writer(engine) as session:
        connection = session.connection()
        assert column_types(connection, KEYS, columns) == [
            "integer",
            "varchar",
            "integer",
            "bytea",
            "timestamp with time zone",
        ]
        [ids] = next_ids(connection, [(KEYS, len(awkward))])
        rows = [
            (key_id, f"bin-{n}", 7, wrapped, NOW + dt.timedelta(microseconds=n))
            for n, (key_id, wrapped) in enumerate(zip(ids, awkward, strict=True))
        ]
        copy_values(connection, KEYS, columns, rows, binary=True)
        session.commit()
        stored = {k.id: k for k in session.scalars(select(DataKey))}
    for key_id, ref, version, wrapped, created in rows:
        key = stored[key_id]
        assert (key.ref, key.master_version, key.wrapped, key.created_at) == (
            ref,
            version,
            wrapped,
            created,
        )


@pytest.mark.postgresql_only
def test_a_binary_copy_of_a_clashing_row_is_an_integrity_error(engine: Engine) -> None:
    columns = ("id", "ref", "master_version", "wrapped", "created_at")
    with _writer(engine) as session:
        connection = session.connection()
        [[key_id]] = next_ids(connection, [(KEYS, 1)])
        rows = [(key_id, ref, 1, b"w", NOW) for ref in ("one-ref", "another-ref")]
        with pytest.raises(IntegrityError):
            copy_values(connection, KEYS, columns, rows, binary=True)
