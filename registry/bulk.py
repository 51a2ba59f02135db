"""Writing many rows at once: ids taken up front, then one statement (or ``COPY``) per table.

Row ids are taken before the rows are inserted, so inserts need no ``RETURNING``.

A receipt names its report's id (the log index) and a record names its data key's and its
borrower's: with the ids known up front, the rows go out as plain inserts (one ``executemany``
or ``COPY`` per table) and a receipt is signed before its row is written, instead of an
``INSERT ... RETURNING`` per row and an ``UPDATE`` to store the receipt afterwards.

- PostgreSQL: from each table's own sequence, so they never collide with anyone's.
- SQLite: the next ones after the largest, which are the ids SQLite itself would give (the
  tables are ``INTEGER PRIMARY KEY`` without ``AUTOINCREMENT``). Only valid while the
  transaction holds SQLite's write lock, which registry transactions take at ``BEGIN``
  (``BEGIN IMMEDIATE``, registry.db): nobody else can insert before it commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql as psycopg_sql
from sqlalchemy import Connection, Select, Table, bindparam, func, insert, select
from sqlalchemy.exc import DBAPIError

_STATEMENTS: dict[tuple[str, tuple[str, ...]], Select[Any]] = {}


def next_ids(connection: Connection, wanted: Sequence[tuple[Table, int]]) -> list[list[int]]:
    """``count`` new ids for each ``(table, count)``, in one statement for all of them.

    Name each table once, and insert the rows before asking again: on SQLite the ids are
    counted from the largest stored.
    """
    names = tuple(table.name for table, _ in wanted)
    dialect = connection.dialect.name
    statement = _STATEMENTS.get((dialect, names))
    if statement is None:
        statement = _STATEMENTS[(dialect, names)] = _statement(dialect, [t for t, _ in wanted])
    if dialect == "postgresql":
        counts = {f"n{i}": n for i, (_, n) in enumerate(wanted)}
        return [sorted(ids or []) for ids in connection.execute(statement, counts).one()]
    largest: list[int | None] = list(connection.execute(statement).one())
    return [
        list(range((top or 0) + 1, (top or 0) + 1 + count))
        for top, (_, count) in zip(largest, wanted, strict=True)
    ]


def _statement(dialect: str, tables: list[Table]) -> Select[Any]:
    if dialect == "postgresql":
        columns = [
            select(func.array_agg(func.nextval(func.pg_get_serial_sequence(table.name, "id"))))
            .select_from(func.generate_series(1, bindparam(f"n{i}")))
            .scalar_subquery()
            for i, table in enumerate(tables)
        ]
    elif dialect == "sqlite":
        columns = [select(func.max(table.c.id)).scalar_subquery() for table in tables]
    else:  # pragma: no cover - the registry runs on these two engines only
        raise NotImplementedError(f"no id allocation for {dialect}")
    return select(*columns)


def insert_rows(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` (dicts with the same keys) with ids taken up front; their ids, in order.

    PostgreSQL gets one ``COPY``; SQLite one ``executemany`` of a plain INSERT. (SQLAlchemy
    cannot batch an ``INSERT ... RETURNING`` on SQLite when the ids must come back in the
    rows' order: it sends one statement per row.)
    """
    if not rows:
        return []
    [ids] = next_ids(connection, [(table, len(rows))])
    for row, row_id in zip(rows, ids, strict=True):
        row["id"] = row_id
    if connection.dialect.name == "postgresql":
        copy_in(connection, table, rows)
    else:
        connection.execute(insert(table), rows)
    return ids


def copy_in(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Send ``rows`` to PostgreSQL with one ``COPY``, in the connection's transaction.

    A pipelined ``executemany`` still has the server run one INSERT per row and the driver
    build each one; ``COPY`` streams the rows and costs both sides a fraction of that. The
    columns' own bind processing (UTC timestamps, money in cents) is applied here, as
    SQLAlchemy would.
    """
    columns = list(rows[0])
    processors = [table.c[name].type.bind_processor(connection.dialect) for name in columns]
    statement = psycopg_sql.SQL("COPY {} ({}) FROM STDIN").format(
        psycopg_sql.Identifier(table.name),
        psycopg_sql.SQL(", ").join(psycopg_sql.Identifier(name) for name in columns),
    )
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(
                    [
                        value if process is None else process(value)
                        for process, value in zip(
                            processors, (row[name] for name in columns), strict=True
                        )
                    ]
                )
    except psycopg.Error as exc:
        # As SQLAlchemy would raise it (IntegrityError for a unique-key race, OperationalError
        # for a deadlock), so the chunk's fallback sees what it expects. No row data in it.
        raise DBAPIError.instance(
            statement.as_string(driver), None, exc, psycopg.Error, hide_parameters=True
        ) from None
