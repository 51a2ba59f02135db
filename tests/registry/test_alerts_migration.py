"""Migration 0003 (early warning) matches the models and goes down and up again, on each engine."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, Table, inspect, text
from sqlalchemy.exc import IntegrityError

from conftest import migrate
from registry.models import Base

TABLES = {"webhooks", "subscriptions", "alert_streams", "alerts", "alert_deliveries"}


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
    migrate(scratch, "upgrade", "0003")
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

    migrate(scratch, "downgrade", "0002")
    assert not TABLES & set(inspect(scratch).get_table_names())
    migrate(scratch, "upgrade", "head")
    assert set(inspect(scratch).get_table_names()) >= TABLES
