"""Fixtures of the reliability suite: a fresh database per test, and a registry to kill."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import own_database
from reliability.server import Registry


@pytest.fixture
def fresh_database_url(engine_name: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own (not the suite's shared one): a server is killed on top of it."""
    with own_database(engine_name, tmp_path, "crash") as url:
        yield url


@pytest.fixture
def registry(fresh_database_url: str, tmp_path: Path) -> Iterator[Registry]:
    server = Registry(tmp_path, fresh_database_url)
    try:
        yield server
    finally:
        server.stop()
