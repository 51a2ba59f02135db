"""Migrations and the head check, on every engine."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, insert, inspect, text
from sqlalchemy.exc import IntegrityError

from registry.db import current_revision, head_revision, make_engine, require_head
from registry.errors import SchemaNotAtHead
from registry.models import Base
from registry.settings import Settings


def test_there_is_exactly_one_migration_head() -> None:
    from alembic.script import ScriptDirectory

    from registry.db import alembic_config

    assert len(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()) == 1


def test_migrations_create_every_mapped_table(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    assert current_revision(engine) == head_revision()
    require_head(engine)


def test_a_database_behind_the_head_is_refused_with_the_fix() -> None:
    empty = create_engine("sqlite://")
    with pytest.raises(SchemaNotAtHead, match="registry migrate"):
        require_head(empty)


def test_sqlite_runs_with_the_privacy_and_durability_pragmas(tmp_path: Path) -> None:
    settings = Settings(instance_path=tmp_path, database_url=f"sqlite:///{tmp_path}/p.db")
    engine = make_engine(settings)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA secure_delete")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    engine.dispose()


def test_a_failed_statement_never_shows_its_parameters(engine: Engine) -> None:
    """Whatever logs or shows a database error, the values it was sent are not in it."""
    borrowers = Base.metadata.tables["borrowers"]
    row = {
        "ref": "r" * 32,
        "id_index": b"blind-index-of-a-person-000000000",
        "data_key_id": 987_654_321,  # no such key: refused
        "national_id_ct": b"ciphertext-of-a-national-id",
        "created_at": dt.datetime(2026, 11, 24, tzinfo=dt.UTC),
    }
    with pytest.raises(IntegrityError) as raised, engine.begin() as conn:
        conn.execute(insert(borrowers), row)
    shown = str(raised.value)
    assert "hidden due to hide_parameters" in shown
    assert "blind-index" not in shown and "ciphertext" not in shown and "rrrr" not in shown
