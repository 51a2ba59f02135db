"""Engines, sessions and the migration head check, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from registry.errors import MigrationBrokeReferences, SchemaNotAtHead
from registry.prepared import driver_error
from registry.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(settings: Settings) -> Engine:
    """Create the engine; on SQLite, set the pragmas the privacy and durability promises need.

    ``hide_parameters``: a failed statement's exception never carries its parameters (blind
    indexes, ciphertexts, a borrower's contact details), whoever logs or shows it.
    """
    if settings.is_sqlite:
        connect_args: dict[str, Any] = {"timeout": 30, "check_same_thread": False}
        database = make_url(settings.database_url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            connect_args["factory"] = _writer_queue(f"{database}-writers.lock")
        engine = create_engine(
            settings.database_url, connect_args=connect_args, hide_parameters=True
        )
        _configure_sqlite(engine, settings.sqlite_synchronous)
        return engine
    engine = create_engine(settings.database_url, hide_parameters=True)
    _ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_SECONDS = 1.0
"""A pooled connection unused for longer is pinged before it is handed out."""


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only if it sat idle (``pool_pre_ping``, cheaper).

    ``pool_pre_ping`` costs a round trip on every checkout: one in nine of a single report's
    on PostgreSQL. A connection that has just been used is almost surely alive; one that sat in
    the pool may have been closed by a server restart or an idle timeout, and is replaced here
    before a request uses it. A server that goes away while connections are busy fails the
    requests in flight (a 5xx, nothing acknowledged, retried by the client), and SQLAlchemy
    then drops the pool's connections as it would anyway.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError("the pooled connection is gone") from exc


class _QueuedWriter(sqlite3.Connection):
    """A SQLite connection whose ``BEGIN IMMEDIATE`` first waits its turn on a file lock.

    NOTE: SQLite's own busy handler does not wake a waiting writer when the lock is freed: it
    sleeps 1, 2, 5, 10, ... up to 100 ms between attempts. Under several workers a write
    transaction then often waits tens of milliseconds for a lock that was free after one (a
    report's p90 went to about 60 ms, its rate down to a fifth of a bare endpoint's). Writers
    of this engine queue on ``flock`` instead, which the kernel hands over the moment it is
    released; the busy timeout still covers writers that do not take it (a deferred
    transaction that turns into a write, another program).
    """

    lock_path = ""
    _fd: int | None = None
    _held = False

    def wait_turn(self) -> None:
        """Take the writers' lock (before ``BEGIN IMMEDIATE``), unless this thread holds it."""
        if _HOLDERS.get(threading.get_ident()):
            return  # a second write transaction of this thread: left to the busy timeout
        if self._fd is None:
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._held = True
        _HOLDERS[threading.get_ident()] = _HOLDERS.get(threading.get_ident(), 0) + 1

    def give_turn(self) -> None:
        if self._held and self._fd is not None:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            ident = threading.get_ident()
            _HOLDERS[ident] = _HOLDERS.get(ident, 1) - 1
            if not _HOLDERS[ident]:
                del _HOLDERS[ident]

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.give_turn()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.give_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_turn()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


_HOLDERS: dict[int, int] = {}
"""Threads of this process holding the writers' lock (how many connections each)."""


def _writer_queue(lock_path: str) -> type[_QueuedWriter]:
    return type("QueuedWriter", (_QueuedWriter,), {"lock_path": lock_path})


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # NOTE: pysqlite's own transaction handling defers BEGIN and cannot take the write lock
        # up front; we issue BEGIN IMMEDIATE ourselves so concurrent writers queue on the busy
        # timeout instead of failing mid-transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # NOTE: freed pages are zeroed so that cleared personal data does not linger in the file.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A read-only caller may ask for a deferred transaction with the execution option
        # ``sqlite_begin="DEFERRED"``: in WAL mode it then never blocks the writers.
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if mode not in ("IMMEDIATE", "DEFERRED"):
            raise ValueError("sqlite_begin must be IMMEDIATE or DEFERRED")
        raw = connection.connection.driver_connection
        queued = mode == "IMMEDIATE" and isinstance(raw, _QueuedWriter)
        if queued:
            raw.wait_turn()
        begin = f"BEGIN {mode}"
        try:
            # (on the driver's connection: SQLAlchemy's statement machinery would cost more
            # than the BEGIN itself, and every request begins at least once)
            try:
                raw.execute(begin)
            except sqlite3.Error as exc:
                raise driver_error(begin, exc, sqlite3.Error) from exc
        except BaseException:
            if queued:
                raw.give_turn()
            raise


def begin_read(session: Session) -> None:
    """Begin the session's transaction as a reader: on SQLite, without the write lock.

    :func:`end_read` must close it before the session writes: SQLite cannot turn a deferred
    read into a write once another writer has committed, so writes begin ``IMMEDIATE``.
    A transaction already open goes on as it is.
    """
    if not session.in_transaction():
        session.connection(execution_options={"sqlite_begin": "DEFERRED"})


def end_read(session: Session) -> None:
    """Close a :func:`begin_read` transaction on SQLite; elsewhere it goes on (no lock to free).

    A commit, not a rollback: the session keeps what it loaded (``expire_on_commit=False``).
    Nothing to close when nothing was read (the caller's key was known).
    """
    if session.in_transaction() and session.get_bind().dialect.name == "sqlite":
        session.commit()


@contextmanager
def statements_commit_alone(connection: Connection) -> Iterator[bool]:
    """On PostgreSQL, while the connection's transaction has sent nothing yet: each statement
    run inside commits on its own (the driver's autocommit). Yields whether that is so;
    elsewhere (SQLite, or a transaction already under way) it yields False and changes nothing.

    For a request whose writes are all one statement: it then needs no BEGIN and no COMMIT,
    two of a single report's five round trips. The connection stays in SQLAlchemy's
    transaction, whose commit or rollback finds nothing to do. A connection whose autocommit
    cannot be switched back off (it broke meanwhile) is invalidated, never pooled.
    """
    driver = connection.connection.driver_connection
    if (
        connection.dialect.name != "postgresql"
        or not isinstance(driver, psycopg.Connection)
        or driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    ):
        yield False
        return
    driver.autocommit = True
    try:
        yield True
    finally:
        if driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            driver.autocommit = False
        else:
            connection.invalidate()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Run every pending migration, in one transaction; safe to repeat.

    On SQLite the migrations run with foreign keys off: rebuilding a table that others refer
    to (alembic's batch mode drops the old table) is refused otherwise, even with the checks
    deferred. Every foreign key is checked before the transaction commits instead.
    """
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _sqlite_foreign_keys(connection, on=False)
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                if sqlite:
                    _check_foreign_keys(connection)
        finally:
            if sqlite:
                _sqlite_foreign_keys(connection, on=True)


def _sqlite_foreign_keys(connection: Connection, *, on: bool) -> None:
    """Switch SQLite's foreign keys on this connection (outside a transaction: inside, SQLite
    ignores the pragma). A connection that cannot be switched back is dropped, never pooled."""
    try:
        connection.connection.driver_connection.execute(  # type: ignore[union-attr]
            f"PRAGMA foreign_keys={'ON' if on else 'OFF'}"
        )
    except BaseException:
        if on:
            connection.invalidate()
        raise


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        tables = sorted({row[0] for row in broken})
        raise MigrationBrokeReferences(
            f"the migration left {len(broken)} rows naming missing rows (tables {tables})"
        )


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def require_head(engine: Engine) -> None:
    """Refuse to serve a database whose schema is behind (or ahead of) the code."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaNotAtHead(
            f"database schema is at {current or 'no revision'} but the code expects {head}; "
            "run `registry migrate` (or `make run`, which migrates) and start again"
        )


def checkpoint_wal(engine: Engine) -> None:
    """Fold the SQLite WAL into the main file and truncate it; no-op on other engines.

    NOTE: deleted rows linger in the WAL until a checkpoint; after clearing personal data the
    WAL must be truncated for the bytes to be gone from disk (``secure_delete`` zeroes pages).
    """
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
    finally:
        raw.close()
