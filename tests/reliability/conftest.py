"""Fixtures of the reliability suite: a fresh database per test, and a registry to kill."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import PG_ADMIN_DSN
from reliability.server import Registry


@pytest.fixture
def fresh_database_url(engine_name: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own (not the suite's shared one): a server is killed on top of it."""
    if engine_name == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    name = f"registry_crash_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    admin = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    host, port, user = admin.get("host"), admin.get("port", "5432"), admin.get("user")
    yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def registry(fresh_database_url: str, tmp_path: Path) -> Iterator[Registry]:
    server = Registry(tmp_path, fresh_database_url)
    try:
        yield server
    finally:
        server.stop()
