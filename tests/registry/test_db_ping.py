"""PostgreSQL connections are pinged before use only after sitting idle in the pool
(registry.db._ping_when_idle): a connection the server closed meanwhile is replaced, not
handed to a request."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import Engine, text

from conftest import PG_ADMIN_DSN
from registry import db
from registry.db import make_engine
from registry.settings import Settings

pytestmark = pytest.mark.postgresql_only


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(pid: int) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_an_idle_connection_closed_by_the_server_is_replaced(
    settings: Settings, migrated: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    engine = make_engine(settings)
    try:
        first = backend_pid(engine)
        terminate(first)
        assert backend_pid(engine) != first
    finally:
        engine.dispose()


@pytest.mark.parametrize(("idle_limit", "pings"), [(3600.0, 0), (0.0, 1)])
def test_a_connection_is_pinged_only_after_sitting_idle(
    settings: Settings,
    migrated: Engine,
    monkeypatch: pytest.MonkeyPatch,
    idle_limit: float,
    pings: int,
) -> None:
    """A ping is a round trip: one in nine of a single report's, if made at every checkout."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", idle_limit)
    engine = make_engine(settings)
    made: list[object] = []
    real_ping = engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        made.append(dbapi_connection)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    try:
        backend_pid(engine)  # a new connection: just opened, never pinged
        backend_pid(engine)  # the same connection again, from the pool
        assert len(made) == pings
    finally:
        engine.dispose()
