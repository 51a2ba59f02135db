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

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql as psycopg_sql
from sqlalchemy import (
    ColumnElement,
    Connection,
    ScalarSelect,
    Select,
    Table,
    bindparam,
    column,
    func,
    literal_column,
    select,
)
from sqlalchemy import table as named_table

from registry.prepared import Prepared, driver_error

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
        statement = select(*id_columns(dialect, [table for table, _ in wanted]))
        _STATEMENTS[(dialect, names)] = statement
    counts = [count for _, count in wanted]
    return ids_from(dialect, connection.execute(statement, id_counts(counts)).one(), counts)


def id_columns(
    dialect: str, tables: Sequence[Table], fixed: Sequence[int] | None = None
) -> list[ScalarSelect[Any]]:
    """Columns that take ids for ``tables``, for a statement that reads something else too;
    run it with :func:`id_counts` among its parameters and read them with :func:`ids_from`.

    ``fixed`` counts are written into the SQL instead (no :func:`id_counts` then). PostgreSQL
    can then plan the statement once: with a count as a parameter its generic plan expects a
    thousand rows from ``generate_series``, so it plans afresh at every execution.
    """
    if dialect == "postgresql":
        counts: list[ColumnElement[Any]] = (
            [bindparam(f"ids_n{i}") for i in range(len(tables))]
            if fixed is None
            else [literal_column(str(int(n))) for n in fixed]
        )
        return [
            select(func.array_agg(func.nextval(func.pg_get_serial_sequence(table.name, "id"))))
            .select_from(func.generate_series(literal_column("1"), count))
            .scalar_subquery()
            for table, count in zip(tables, counts, strict=True)
        ]
    if dialect == "sqlite":
        return [_sqlite_top(table) for table in tables]
    raise NotImplementedError(f"no id allocation for {dialect}")  # pragma: no cover


_SQLITE_SEQUENCE = named_table("sqlite_sequence", column("name"), column("seq"))


def _sqlite_top(table: Table) -> ScalarSelect[Any]:
    """The id the table's new rows are numbered after: for an ``AUTOINCREMENT`` table the
    largest ever given (``sqlite_sequence``, which deleting rows never lowers), else the
    largest stored."""
    if table.dialect_options["sqlite"]["autoincrement"]:
        seq = _SQLITE_SEQUENCE.c.seq
        return (
            select(func.coalesce(func.max(seq), 0))
            .where(_SQLITE_SEQUENCE.c.name == table.name)
            .scalar_subquery()
        )
    return select(func.max(table.c.id)).scalar_subquery()


def id_counts(counts: Sequence[int]) -> dict[str, int]:
    """The parameters of :func:`id_columns`: how many ids each table takes (PostgreSQL)."""
    return {f"ids_n{i}": n for i, n in enumerate(counts)}


def ids_from(dialect: str, values: Sequence[Any], counts: Sequence[int]) -> list[list[int]]:
    """The ids, per table, from the values of :func:`id_columns`."""
    if dialect == "postgresql":
        return [sorted(ids or []) for ids in values]
    return [
        list(range((top or 0) + 1, (top or 0) + 1 + count))
        for top, count in zip(values, counts, strict=True)
    ]


def write_rows(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` whose ids are set (from :func:`next_ids`): one ``COPY`` or one
    ``executemany``. For a writer that numbers several tables' rows in one statement."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        copy_in(connection, table, rows)
    else:
        _prepared_insert(table).executemany(connection, rows)


_INSERTS: dict[str, Prepared] = {}


def _prepared_insert(table: Table) -> Prepared:
    """The table's plain INSERT for rows that name every column, run by the driver
    (registry.prepared): SQLAlchemy's own executemany converts each row's parameters in
    Python, about a tenth of a batch's CPU on SQLite."""
    statement = _INSERTS.get(table.name)
    if statement is None:
        statement = _INSERTS[table.name] = Prepared.rows_into(table)
    return statement


def copy_in(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Send ``rows`` to PostgreSQL with one ``COPY``, in the connection's transaction.

    A pipelined ``executemany`` still has the server run one INSERT per row and the driver
    build each one; ``COPY`` streams the rows and costs both sides a fraction of that. The
    columns' own bind processing (UTC timestamps, money in cents) is applied here, as
    SQLAlchemy would.
    """
    columns = list(rows[0])
    processors = [table.c[name].type.bind_processor(connection.dialect) for name in columns]
    copy_values(
        connection,
        table,
        columns,
        (
            [
                value if process is None else process(value)
                for process, value in zip(processors, (row[name] for name in columns), strict=True)
            ]
            for row in rows
        ),
    )


def copy_values(
    connection: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    binary: bool = False,
) -> None:
    """One ``COPY`` of ``rows`` whose values are already as the driver takes them, in
    ``columns``' order (PostgreSQL only).

    ``binary``: COPY's binary format, each column typed as the table declares it. Bytes then go
    as they are instead of as hex text: for rows of ciphertext about half the cost of a row,
    most of it the driver's formatting in Python (500 certificate rows: 20 -> 10 us a row).
    """
    statement = psycopg_sql.SQL("COPY {} ({}) FROM STDIN{}").format(
        psycopg_sql.Identifier(table.name),
        psycopg_sql.SQL(", ").join(psycopg_sql.Identifier(name) for name in columns),
        psycopg_sql.SQL(" (FORMAT BINARY)" if binary else ""),
    )
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            if binary:
                copy.set_types(column_types(connection, table, columns))
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        # As SQLAlchemy would raise it (IntegrityError for a unique-key race, OperationalError
        # for a deadlock), so the chunk's fallback sees what it expects. No row data in it.
        raise driver_error(statement.as_string(driver), exc, psycopg.Error) from None


def column_types(connection: Connection, table: Table, columns: Sequence[str]) -> list[str]:
    """The database's type names of ``columns`` (``varchar``, not ``VARCHAR(32)``), as a binary
    ``COPY`` needs them."""
    return [
        table.c[name].type.compile(dialect=connection.dialect).split("(")[0].lower()
        for name in columns
    ]
