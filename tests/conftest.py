"""Fixtures for the whole suite: a real database per run, on SQLite and on PostgreSQL.

Database-backed tests take ``engine_name`` (directly or through ``engine``/``app``) and run once
per engine. The schema is migrated to head once per engine per run, so migrations are tested on
every run; each test starts from empty tables.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from api import create_app
from registry.db import alembic_config, checkpoint_wal, make_engine, upgrade_to_head
from registry.models import Base
from registry.secrets import init_instance
from registry.settings import Settings

PG_ADMIN_DSN = os.environ.get(
    "REGISTRY_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
IN_CI = os.environ.get("CI") == "true"


def _postgres_problem() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    problem = _postgres_problem()
    config.stash[_PG_PROBLEM] = problem
    if problem and IN_CI:
        raise pytest.UsageError(
            f"CI=true requires PostgreSQL at {PG_ADMIN_DSN!r} and it is not reachable ({problem})"
        )


_PG_PROBLEM = pytest.StashKey[str | None]()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine_name" in metafunc.fixturenames:
        engines = ["sqlite"]
        if metafunc.config.stash[_PG_PROBLEM] is None:
            engines.append("postgresql")
        if metafunc.definition.get_closest_marker("postgresql_only"):
            engines.remove("sqlite")
        if metafunc.definition.get_closest_marker("sqlite_only"):
            engines = ["sqlite"]
        metafunc.parametrize("engine_name", engines, scope="session")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    problem = terminalreporter.config.stash.get(_PG_PROBLEM, None)
    if problem:
        terminalreporter.write_sep(
            "!", f"PostgreSQL was NOT tested (not reachable: {problem}); only SQLite ran", red=True
        )


@contextmanager
def own_database(engine_name: str, directory: Path, label: str) -> Iterator[str]:
    """The URL of a database no other test uses: a new file for SQLite, a new database for
    PostgreSQL (dropped afterwards, its connections ended first)."""
    if engine_name == "sqlite":
        yield f"sqlite:///{directory / f'{label}.db'}"
        return
    name = f"registry_{label}_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    admin = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    host, port, user = admin.get("host"), admin.get("port", "5432"), admin.get("user")
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
def database_url(engine_name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database for this run: a file for SQLite, a new database for PostgreSQL."""
    with own_database(engine_name, tmp_path_factory.mktemp("sqlite"), "test") as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    instance = tmp_path_factory.mktemp("instance")
    made = Settings(instance_path=instance, database_url=database_url)
    init_instance(made)
    return made


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def scratch(engine_name: str, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of its own, for migration tests: migrating it down must not disturb
    the suite's."""
    with own_database(engine_name, tmp_path, "scratch") as url:
        engine = create_engine(url)
        yield engine
        engine.dispose()


def sqlite_write_lock_is_free(path: str) -> bool:
    """Whether another connection gets SQLite's write lock at once (no busy wait)."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


def migrate(engine: Engine, action: str, revision: str) -> None:
    """Run alembic's ``upgrade``/``downgrade`` to ``revision`` on ``engine``."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


@pytest.fixture
def engine(migrated: Engine) -> Iterator[Engine]:
    """The migrated engine; every table is emptied after the test."""
    yield migrated
    with migrated.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    checkpoint_wal(migrated)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session for the test's own reads and writes; its reads never block the app's writers."""
    with Session(engine.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False) as s:
        yield s


class Clock:
    """The registry's notion of now, movable by tests."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, **kwargs: float) -> None:
        self.offset += dt.timedelta(**kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(settings: Settings, engine: Engine, clock: Clock) -> Iterator[Flask]:
    application = create_app(settings, clock=clock)
    application.config["TESTING"] = True
    yield application
    application.extensions["registry"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def artifacts_dir() -> Path:
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
