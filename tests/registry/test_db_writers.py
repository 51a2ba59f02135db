"""SQLite writers queue on a file lock (registry.db._QueuedWriter) rather than in SQLite's busy
handler, whose sleeps grow to 100 ms: whoever holds a write transaction holds the lock, and
gives it back when the transaction ends, however it ends."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from registry.db import begin_read, make_engine
from registry.settings import Settings

pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    settings = Settings(instance_path=tmp_path, database_url=f"sqlite:///{tmp_path}/w.db")
    made = make_engine(settings)
    with made.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    yield made
    made.dispose()


def lock_is_free(engine: Engine) -> bool:
    """Whether another writer (another fd: another worker) could take the lock now."""
    fd = os.open(f"{engine.url.database}-writers.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.mark.parametrize("ending", ["commit", "rollback"])
def test_a_write_transaction_holds_the_writers_lock_until_it_ends(
    engine: Engine, ending: str
) -> None:
    with Session(engine) as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        assert not lock_is_free(engine)
        getattr(session, ending)()
        assert lock_is_free(engine)


def test_a_failed_statement_then_rollback_gives_the_lock_back(engine: Engine) -> None:
    with Session(engine) as session:
        with pytest.raises(Exception, match="no such table"):
            session.execute(text("INSERT INTO missing VALUES (1)"))
        session.rollback()
        assert lock_is_free(engine)


def test_a_reader_does_not_take_the_writers_lock(engine: Engine) -> None:
    with Session(engine) as session:
        begin_read(session)
        session.execute(text("SELECT count(*) FROM t"))
        assert lock_is_free(engine)
        session.commit()


def test_a_closed_session_leaves_the_lock_free(engine: Engine) -> None:
    session = Session(engine)
    session.execute(text("INSERT INTO t VALUES (1)"))
    session.close()
    assert lock_is_free(engine)


def test_a_begin_sqlite_refuses_is_sqlalchemys_error_and_gives_the_lock_back(
    engine: Engine,
) -> None:
    """A process that writes without the queue (an operator's sqlite3 shell) holds SQLite's
    own lock: BEGIN IMMEDIATE then fails, as SQLAlchemy's OperationalError like any statement,
    and the queue's lock is not left held."""
    outsider = sqlite3.connect(str(engine.url.database), isolation_level=None)
    outsider.execute("BEGIN IMMEDIATE")
    try:
        with engine.connect() as conn:
            conn.connection.driver_connection.execute("PRAGMA busy_timeout=0")  # type: ignore[union-attr]
            with pytest.raises(OperationalError, match="locked"):
                conn.begin()
            assert lock_is_free(engine)
    finally:
        outsider.execute("ROLLBACK")
        outsider.close()
