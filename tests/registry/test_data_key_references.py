"""References clearing deletes through: RESTRICT on PostgreSQL (0007); what is in use stays."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, delete, func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conftest import migrate
from factories import admit, payload, submit
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
    # 0008, not head: 0009 turns the references to data keys into triggers on PostgreSQL
    # (test_data_key_checks_migration).
    migrate(scratch, "upgrade", "0008")
    # SQLite keeps NO ACTION (the migration explains why); PostgreSQL matches the models.
    expected = "RESTRICT" if engine_name == "postgresql" else None
    assert on_delete(scratch) == dict.fromkeys(REFERRING, expected)
    migrate(scratch, "downgrade", "0006")
    assert on_delete(scratch) == dict.fromkeys(REFERRING, None)
    migrate(scratch, "upgrade", "0008")
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
