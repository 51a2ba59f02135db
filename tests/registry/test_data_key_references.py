"""References clearing deletes through: RESTRICT on PostgreSQL (0007); what is in use stays."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, delete, func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conftest import PG_ADMIN_DSN
from factories import admit, payload, submit
from registry.db import alembic_config
from registry.models import Base, Borrower, DataKey, Delinquency

# What 0007 changes: every reference to a data key, and the record's to its borrower.
REFERRING = {
    ("borrowers", "data_keys"),
    ("delinquencies", "data_keys"),
    ("clearance_certificates", "data_keys"),
    ("inquiries", "data_keys"),
    ("disputes", "data_keys"),
    ("borrower_statements", "data_keys"),
    ("notifications", "data_keys"),
    ("borrower_enrolments", "data_keys"),
    ("delinquencies", "borrowers"),
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


def on_delete(engine: Engine) -> dict[tuple[str, str], str | None]:
    """The ``ON DELETE`` action of each reference 0007 is about, as the database has it."""
    found: dict[tuple[str, str], str | None] = {}
    inspector = inspect(engine)
    for table in inspector.get_table_names():
        for fk in inspector.get_foreign_keys(table):
            pair = (table, fk["referred_table"])
            if fk["referred_table"] == "data_keys" or pair in REFERRING:
                found[pair] = fk.get("options", {}).get("ondelete")
    return found


def test_every_model_refers_to_data_keys_and_borrowers_with_restrict() -> None:
    declared = {
        (fk.parent.table.name, fk.column.table.name): fk.ondelete
        for table in Base.metadata.sorted_tables
        for fk in table.foreign_keys
        if fk.column.table.name in ("data_keys", "borrowers")
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


def test_a_key_or_borrower_still_in_use_cannot_be_deleted(
    client: FlaskClient, session: Session, engine: Engine
) -> None:
    bank = admit(session, "BANKA")
    assert submit(client, bank, payload(bank)).status_code == 201
    record = session.scalars(select(Delinquency)).one()
    used = [
        delete(DataKey).where(DataKey.id == record.data_key_id),
        delete(DataKey).where(DataKey.id == record.borrower.data_key_id),
        delete(Borrower).where(Borrower.id == record.borrower_id),
    ]
    session.commit()
    for statement in used:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(statement)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Borrower)) == 1
        assert conn.scalar(select(func.count()).select_from(DataKey)) == 2
