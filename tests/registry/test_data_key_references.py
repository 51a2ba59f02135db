"""References to data keys: RESTRICT on PostgreSQL (migration 0007), and a used key stays."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, delete, insert, inspect
from sqlalchemy.exc import IntegrityError

from conftest import PG_ADMIN_DSN
from registry.db import alembic_config
from registry.models import Base, Borrower, DataKey

# What 0007 changes: every table with a column referring to a data key.
REFERRING = {
    "borrowers",
    "delinquencies",
    "clearance_certificates",
    "inquiries",
    "disputes",
    "borrower_statements",
    "notifications",
    "borrower_enrolments",
}


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


def migrate(engine: Engine, action: str, revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def on_delete(engine: Engine) -> dict[str, str | None]:
    """Each referring table's ``ON DELETE`` action towards data_keys, as the database has it."""
    found: dict[str, str | None] = {}
    inspector = inspect(engine)
    for table in inspector.get_table_names():
        for fk in inspector.get_foreign_keys(table):
            if fk["referred_table"] == "data_keys":
                found[table] = fk.get("options", {}).get("ondelete")
    return found


def test_every_model_refers_to_its_data_key_with_restrict() -> None:
    declared = {
        fk.parent.table.name: fk.ondelete
        for table in Base.metadata.sorted_tables
        for fk in table.foreign_keys
        if fk.column.table.name == "data_keys"
    }
    assert declared == dict.fromkeys(REFERRING, "RESTRICT")


def test_0007_goes_up_and_down(scratch: Engine, engine_name: str) -> None:
    migrate(scratch, "upgrade", "head")
    # SQLite keeps NO ACTION (the migration explains why); PostgreSQL matches the models.
    expected = "RESTRICT" if engine_name == "postgresql" else None
    assert on_delete(scratch) == dict.fromkeys(REFERRING, expected)
    migrate(scratch, "downgrade", "0006")
    assert on_delete(scratch) == dict.fromkeys(REFERRING, None)
    migrate(scratch, "upgrade", "head")
    assert on_delete(scratch) == dict.fromkeys(REFERRING, expected)


def test_a_key_still_in_use_cannot_be_deleted(engine: Engine) -> None:
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        key_id = conn.execute(
            insert(DataKey)
            .values(ref="k" * 32, master_version=1, wrapped=b"w" * 60, created_at=now)
            .returning(DataKey.id)
        ).scalar_one()
        conn.execute(
            insert(Borrower).values(
                ref="b" * 32,
                id_index=b"i" * 32,
                data_key_id=key_id,
                national_id_ct=b"c",
                created_at=now,
            )
        )
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(delete(DataKey).where(DataKey.id == key_id))
    with engine.begin() as conn:
        conn.execute(delete(Borrower))
        conn.execute(delete(DataKey).where(DataKey.id == key_id))
