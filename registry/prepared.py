"""Statements of the report hot path, run on the driver's own connection.

SQLAlchemy's execution machinery (execution context, parameter and result set-up, events)
costs several times what SQLite or psycopg take to run a short statement. A signed report
runs a handful of statements, each the same every time, so :class:`Prepared` compiles a Core
statement once per dialect and column set and hands it straight to the driver, with the
same type conversions SQLAlchemy would apply. It runs inside the SQLAlchemy connection's
transaction, raises SQLAlchemy's exception classes (``IntegrityError`` and the rest, never
showing the parameters: :func:`driver_error`), and tells ``before_cursor_execute`` listeners
what it sends, so code and tests that watch statements still see every one.

Only plain statements qualify: no expanding ``IN`` parameters and no Python-side column
defaults (a row must name every column it needs); both are refused when compiling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    """Parameter names in the order the driver takes them (positional paramstyles)."""
    positional: bool
    binds: tuple[tuple[str, Processor], ...]
    """Parameters whose values are converted before sending, with their converters."""
    constants: dict[str, Any]
    """Values the statement carries itself (``column == "active"``)."""
    results: tuple[Processor | None, ...]
    returns_rows: bool
    """Known from the statement: asking the cursor (psycopg builds a description of every
    column each time) costs more than some of the statements themselves."""


@dataclass(frozen=True)
class Outcome:
    """What a statement returned: its rows (converted) and how many rows it changed."""

    rows: list[tuple[Any, ...]]
    rowcount: int

    def one(self) -> tuple[Any, ...]:
        if len(self.rows) != 1:
            raise LookupError(f"expected one row, got {len(self.rows)}")
        return self.rows[0]


class Prepared:
    """A Core statement compiled once per dialect (and column set), run by the driver."""

    def __init__(self, statement: ClauseElement, *, by_columns: bool = False) -> None:
        self._statement = statement
        self._by_columns = by_columns
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    @classmethod
    def rows_into(cls, table: Table) -> Prepared:
        """An INSERT whose columns are the keys of the rows it is given (as with
        ``connection.execute(insert(table), row)``)."""
        return cls(insert(table), by_columns=True)

    def execute(self, connection: Connection, params: Mapping[str, Any]) -> Outcome:
        compiled = self._compile(connection.dialect, params)
        values = _values(compiled, params)
        return _run(connection, compiled, values, many=False)

    def executemany(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> Outcome:
        """One statement for several rows with the same columns (the first row's)."""
        if not rows:
            return Outcome([], 0)
        compiled = self._compile(connection.dialect, rows[0])
        return _run(connection, compiled, [_values(compiled, row) for row in rows], many=True)

    def _compile(self, dialect: Dialect, params: Mapping[str, Any]) -> _Compiled:
        columns = tuple(params) if self._by_columns else ()
        key = (dialect.name, columns)
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = _compile(self._statement, dialect, columns)
        return found


def _compile(statement: ClauseElement, dialect: Dialect, columns: tuple[str, ...]) -> _Compiled:
    compiled = statement.compile(dialect=dialect, column_keys=list(columns) or None)
    assert isinstance(compiled, SQLCompiler)
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise ValueError("a column default computed in Python: give every column a value")
    binds = compiled.binds
    if any(bind.expanding for bind in binds.values()):
        raise ValueError("expanding IN parameters are not supported")
    if any(bind.callable is not None for bind in binds.values()):
        raise ValueError("a parameter whose value is computed at execution: pass the value")
    positional = bool(compiled.positional)
    names = tuple(compiled.positiontup or ()) if positional else tuple(binds)
    processors = []
    for name in dict.fromkeys(names) if positional else binds:  # a name may repeat
        processor = binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors.append((name, processor))
    returned: Sequence[Any] = (
        getattr(statement, "selected_columns", None)
        or getattr(statement, "exported_columns", None)
        or ()
    )
    results: list[Processor | None] = []
    for column in returned:
        results.append(column.type.dialect_impl(dialect).result_processor(dialect, None))
    constants = {name: bind.effective_value for name, bind in binds.items() if not bind.required}
    return _Compiled(
        compiled.string,
        names,
        positional,
        tuple(processors),
        constants,
        tuple(results),
        bool(results),
    )


def _values(compiled: _Compiled, params: Mapping[str, Any]) -> Any:
    values = {**compiled.constants, **params}
    for name, processor in compiled.binds:
        values[name] = processor(values[name])
    if compiled.positional:
        return tuple(values[name] for name in compiled.names)
    return values


def _run(connection: Connection, compiled: _Compiled, values: Any, *, many: bool) -> Outcome:
    dialect = connection.dialect
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        if connection.dispatch.before_cursor_execute:
            connection.dispatch.before_cursor_execute(
                connection, cursor, compiled.sql, values, None, many
            )
        try:
            if many:
                cursor.executemany(compiled.sql, values)
            else:
                cursor.execute(compiled.sql, values)
            rows = cursor.fetchall() if compiled.returns_rows else []
        except dialect.loaded_dbapi.Error as exc:
            raise driver_error(compiled.sql, exc, dialect.loaded_dbapi.Error, dialect) from exc
        rowcount = cursor.rowcount
    finally:
        cursor.close()
    if rows and any(compiled.results):
        rows = [_convert(row, compiled.results) for row in rows]
    return Outcome(rows, rowcount)


def driver_error(
    statement: str, exc: Exception, base: type[Exception], dialect: Dialect | None = None
) -> StatementError:
    """The driver's ``exc`` as the SQLAlchemy class a statement run through SQLAlchemy would
    raise (``IntegrityError``, ``OperationalError``, ...), for code that runs statements on
    the driver itself. Its parameters are never shown: they may be personal data."""
    return DBAPIError.instance(statement, None, exc, base, hide_parameters=True, dialect=dialect)


def _convert(row: Sequence[Any], processors: tuple[Processor | None, ...]) -> tuple[Any, ...]:
    return tuple(
        value if processor is None else processor(value)
        for value, processor in zip(row, processors, strict=False)
    )
