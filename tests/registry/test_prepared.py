"""registry.prepared: what the driver is handed is what SQLAlchemy would have sent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Connection,
    Date,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError

from registry.models import Money, UTCDateTime
from registry.prepared import Prepared

metadata = MetaData()
things = Table(
    "prepared_things",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(40), nullable=False, unique=True),
    Column("amount", Money, nullable=True),
    Column("seen_at", UTCDateTime, nullable=False),
    Column("due_on", Date, nullable=True),
    Column("blob", LargeBinary, nullable=False),
)
with_default = Table(
    "prepared_defaults",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("made_at", UTCDateTime, default=lambda: dt.datetime.now(dt.UTC)),
)

INSERT = Prepared.rows_into(things)
READ_COLUMNS = (things.c.name, things.c.amount, things.c.seen_at, things.c.due_on, things.c.blob)
READ = Prepared(select(*READ_COLUMNS).where(things.c.id == bindparam("id")))
EAST = dt.timezone(dt.timedelta(hours=8))


def row(id_: int, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": id_,
        "name": f"thing-{id_}",
        "amount": Decimal("1234.56"),
        "seen_at": dt.datetime(2026, 3, 1, 20, 30, 15, 123456, tzinfo=EAST),
        "due_on": dt.date(2026, 4, 30),
        "blob": b"\x00\x01binary",
    }
    return values | changes


@pytest.fixture
def connection(scratch: Engine) -> Iterator[Connection]:
    metadata.create_all(scratch)
    with scratch.connect() as conn:
        conn.begin()
        yield conn
        conn.rollback()


def stored(connection: Connection, id_: int) -> tuple[Any, ...]:
    """The row as the engine keeps it (no type conversion on the way out)."""
    found = connection.execute(
        text("SELECT name, amount, seen_at, due_on, blob FROM prepared_things WHERE id = :id"),
        {"id": id_},
    ).one()
    return tuple(found)


def test_a_row_is_stored_exactly_as_sqlalchemy_stores_it(connection: Connection) -> None:
    connection.execute(insert(things), row(1, name="core"))
    INSERT.execute(connection, row(2, name="prepared"))
    assert stored(connection, 2)[1:] == stored(connection, 1)[1:]


def test_a_row_reads_back_converted_as_sqlalchemy_converts_it(connection: Connection) -> None:
    INSERT.execute(connection, row(1))
    INSERT.execute(connection, row(2, amount=None, due_on=None))
    core = [
        tuple(connection.execute(select(*READ_COLUMNS).where(things.c.id == i)).one())
        for i in (1, 2)
    ]
    prepared = [READ.execute(connection, {"id": i}).one() for i in (1, 2)]
    assert prepared == core
    name, amount, seen_at, due_on, blob = prepared[0]
    assert name == "thing-1"
    assert (amount, due_on, blob) == (Decimal("1234.56"), dt.date(2026, 4, 30), b"\x00\x01binary")
    assert seen_at == row(1)["seen_at"] and seen_at.tzinfo is not None


def test_several_rows_go_in_one_call(connection: Connection) -> None:
    written = INSERT.executemany(connection, [row(i) for i in range(1, 6)])
    assert written.rowcount in (5, -1)  # the driver may not count an executemany
    assert connection.execute(select(things.c.id).order_by(things.c.id)).scalars().all() == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert INSERT.executemany(connection, []).rows == []


def test_the_types_own_checks_still_refuse_bad_values(connection: Connection) -> None:
    with pytest.raises(ValueError, match="two decimal places"):
        INSERT.execute(connection, row(1, amount=Decimal("1.005")))
    with pytest.raises(ValueError, match="naive"):
        INSERT.execute(connection, row(1, seen_at=dt.datetime(2026, 1, 1)))


def test_a_duplicate_raises_sqlalchemys_integrity_error(connection: Connection) -> None:
    """Callers retry or refuse on ``sqlalchemy.exc.IntegrityError``, whichever path wrote."""
    INSERT.execute(connection, row(1))
    with pytest.raises(IntegrityError) as caught:
        INSERT.execute(connection, row(2, name="thing-1", blob=b"personal-detail"))
    assert "personal-detail" not in str(caught.value)  # parameters are never shown


def test_statement_listeners_see_what_is_sent(connection: Connection) -> None:
    seen: list[tuple[str, bool]] = []

    def note(_conn: Any, _cursor: Any, sql: str, _params: Any, _ctx: Any, many: bool) -> None:
        seen.append((sql, many))

    event.listen(connection.engine, "before_cursor_execute", note)
    try:
        INSERT.execute(connection, row(1))
        INSERT.executemany(connection, [row(2), row(3)])
    finally:
        event.remove(connection.engine, "before_cursor_execute", note)
    assert [many for _, many in seen] == [False, True]
    assert all(sql.startswith("INSERT INTO prepared_things") for sql, _ in seen)


def test_a_changed_row_count_is_reported(connection: Connection) -> None:
    INSERT.execute(connection, row(1))
    rename = Prepared(
        things.update().where(things.c.id == bindparam("target")).values(name=bindparam("new"))
    )
    assert rename.execute(connection, {"target": 1, "new": "renamed"}).rowcount == 1
    assert rename.execute(connection, {"target": 9, "new": "nobody"}).rowcount == 0


def test_one_wants_exactly_one_row(connection: Connection) -> None:
    with pytest.raises(LookupError):
        READ.execute(connection, {"id": 404}).one()


def test_statements_it_cannot_run_faithfully_are_refused(connection: Connection) -> None:
    """A Python-side default or an expanding IN needs SQLAlchemy's execution machinery."""
    with pytest.raises(ValueError, match="default"):
        Prepared.rows_into(with_default).execute(connection, {"id": 1})
    expanding = select(things.c.id).where(things.c.id.in_(bindparam("ids", expanding=True)))
    with pytest.raises(ValueError, match="expanding"):
        Prepared(expanding).execute(connection, {"ids": [1, 2]})


def test_a_parameter_used_twice_is_converted_once(connection: Connection) -> None:
    INSERT.execute(connection, row(1))
    seen_between = Prepared(
        select(things.c.id).where(
            things.c.seen_at >= bindparam("at", type_=UTCDateTime()),
            things.c.seen_at <= bindparam("at", type_=UTCDateTime()),
        )
    )
    assert seen_between.execute(connection, {"at": row(1)["seen_at"]}).rows == [(1,)]


def test_values_written_into_the_statement_are_sent_with_it(connection: Connection) -> None:
    INSERT.executemany(connection, [row(1), row(2)])
    named = Prepared(select(things.c.id).where(things.c.name == "thing-2"))
    assert named.execute(connection, {}).rows == [(2,)]


def test_rows_returned_by_a_write_are_read(connection: Connection) -> None:
    add = Prepared(
        insert(things)
        .values(
            id=bindparam("id"),
            name=bindparam("name"),
            seen_at=bindparam("seen_at"),
            blob=bindparam("blob"),
        )
        .returning(things.c.id, things.c.seen_at)
    )
    values = row(7)
    del values["amount"], values["due_on"]
    assert add.execute(connection, values).one() == (7, values["seen_at"])


def test_a_percent_sign_in_the_sql_reaches_the_engine_as_one(connection: Connection) -> None:
    """(psycopg's placeholders are %(name)s, so SQL's own % is doubled, then undoubled.)"""
    INSERT.executemany(connection, [row(1), row(2, name="other")])
    matching = Prepared(select(things.c.id).where(things.c.name.like(literal_column("'thing-%'"))))
    assert matching.execute(connection, {}).rows == [(1,)]
