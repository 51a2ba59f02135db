"""Migration 0003 (early warning) matches the models and goes down and up again, on each engine."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, Table, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from conftest import PG_ADMIN_DSN
from registry.db import alembic_config
from registry.models import Base

TABLES = {"webhooks", "subscriptions", "alert_streams", "alerts", "alert_deliveries"}


@pytest.fixture
def scratch(engine_name: str, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of its own: migrating it down must not disturb the suite's."""
    if engine_name == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'scratch.db'}")
        yield engine
        engine.dispose()
        return
    name = f"registry_scratch_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    admin = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    host, port, user = admin.get("host"), admin.get("port", "5432"), admin.get("user")
    engine = create_engine(f"postgresql+psycopg://{user}@{host}:{port}/{name}")
    yield engine
    engine.dispose()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _migrate(engine: Engine, action: str, revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def _tables_named(diff: Any) -> set[str]:
    """The table names one autogenerate difference is about (its shapes vary by kind)."""
    items = diff if isinstance(diff, list) else [diff]
    names = set()
    for item in items:
        for part in item[1:]:
            if isinstance(part, str):
                names.add(part)
            elif isinstance(part, Table):
                names.add(part.name)
            elif getattr(part, "table", None) is not None:
                names.add(part.table.name)
    return names


def _differences(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        found = compare_metadata(context, Base.metadata)
    return [repr(d) for d in found if _tables_named(d) & TABLES]


def test_0003_matches_the_models_and_downgrades_cleanly(scratch: Engine) -> None:
    _migrate(scratch, "upgrade", "0003")
    assert set(inspect(scratch).get_table_names()) >= TABLES
    assert _differences(scratch) == []
    indexes = {i["name"]: i for i in inspect(scratch).get_indexes("subscriptions")}
    assert indexes["uq_subscriptions_live"]["unique"]

    # The partial unique index allows one live subscription per member and borrower, and any
    # number of ended ones.
    with scratch.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO institutions (id, code, name, status, created_at) "
                "VALUES (1, 'BANKA', 'A', 'active', CURRENT_TIMESTAMP)"
            )
        )
        insert = text(
            "INSERT INTO subscriptions (ref, institution_id, borrower_index, national_id_masked,"
            " created_at, ended_at) VALUES (:ref, 1, :index, 'x', CURRENT_TIMESTAMP, :ended)"
        )
        conn.execute(insert, {"ref": "a", "index": b"i" * 32, "ended": None})
        conn.execute(insert, {"ref": "b", "index": b"i" * 32, "ended": "2026-01-01 00:00:00"})
        conn.execute(insert, {"ref": "c", "index": b"i" * 32, "ended": "2026-01-02 00:00:00"})
    with pytest.raises(IntegrityError), scratch.begin() as conn:
        conn.execute(insert, {"ref": "d", "index": b"i" * 32, "ended": None})

    _migrate(scratch, "downgrade", "0002")
    assert not TABLES & set(inspect(scratch).get_table_names())
    _migrate(scratch, "upgrade", "head")
    assert set(inspect(scratch).get_table_names()) >= TABLES
