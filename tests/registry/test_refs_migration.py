"""Migration 0010: the refs nobody looks up alone lose their unique indexes, and nothing else
about the four tables changes; on SQLite, migrations run with foreign keys off and are
refused when they would leave a broken reference."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError

from conftest import migrate
from factories import filler_row
from registry.db import current_revision, head_revision, make_engine, upgrade_to_head
from registry.errors import MigrationBrokeReferences
from registry.models import Base
from registry.settings import Settings

UNLOOKED = ("data_keys", "borrowers", "delinquencies", "clearance_certificates")
NOW = dt.datetime(2026, 11, 24, 6, 0, tzinfo=dt.UTC)


def _unique_column_sets(engine: Engine, table: str) -> set[tuple[str, ...]]:
    found = inspect(engine)
    sets = {tuple(u["column_names"]) for u in found.get_unique_constraints(table)}
    sets |= {tuple(i["column_names"]) for i in found.get_indexes(table) if i["unique"]}
    return sets


def _indexed_columns(engine: Engine, table: str) -> set[tuple[str, ...]]:
    return {tuple(i["column_names"]) for i in inspect(engine).get_indexes(table)}


@pytest.mark.parametrize("table", UNLOOKED)
def test_no_ref_is_indexed_and_the_other_constraints_stay(engine: Engine, table: str) -> None:
    assert all("ref" not in columns for columns in _unique_column_sets(engine, table))
    assert all("ref" not in columns for columns in _indexed_columns(engine, table))
    declared = {
        tuple(c.name for c in constraint.columns)
        for constraint in Base.metadata.tables[table].constraints
        if constraint.__class__.__name__ == "UniqueConstraint"
    } | {
        tuple(c.name for c in column_set.columns)
        for column_set in Base.metadata.tables[table].indexes
        if column_set.unique
    }
    assert _unique_column_sets(engine, table) == declared
    assert {
        tuple(c.name for c in index.columns) for index in Base.metadata.tables[table].indexes
    } <= _indexed_columns(engine, table) | _unique_column_sets(engine, table)


def _plan(engine: Engine, query: str, params: dict[str, object]) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(text(f"EXPLAIN QUERY PLAN {query}"), params).all()
            return "\n".join(str(row[-1]) for row in rows)
        # With sequential scans priced out, a scan remains only where no index can serve.
        conn.exec_driver_sql("SET enable_seqscan = off")
        rows = conn.execute(text(f"EXPLAIN {query}"), params).all()
        return "\n".join(str(row[0]) for row in rows)


def test_a_record_is_found_by_ref_through_its_borrowers_index(engine: Engine) -> None:
    # ``statements.own_record``'s query: the only one that looks a record up by its ref.
    query = (
        "SELECT d.id FROM delinquencies AS d JOIN borrowers AS b ON b.id = d.borrower_id "
        "WHERE d.ref = :ref AND b.id_index = :index"
    )
    plan = _plan(engine, query, {"ref": "0" * 32, "index": b"\x01" * 32})
    if engine.dialect.name == "sqlite":
        assert "SCAN delinquencies" not in plan and "SCAN borrowers" not in plan, plan
        assert "ix_delinquencies_borrower_id" in plan, plan
    else:
        assert "Seq Scan" not in plan, plan


def _seed(engine: Engine) -> dict[str, int]:
    """A member, its keys, a borrower, a record, a report and a certificate."""
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        for n, name in enumerate(
            ("institutions", "borrowers", "delinquencies", "reports"), start=1
        ):
            if name in ("borrowers", "delinquencies"):
                ids["data_keys"] = _add(conn, "data_keys", ids, n * 10)
            ids[name] = _add(conn, name, ids, n)
        ids["certificate_key"] = _add(conn, "data_keys", ids, 99)
        ids["clearance_certificates"] = _add(
            conn, "clearance_certificates", ids | {"data_keys": ids["certificate_key"]}, 98
        )
    return ids


def _add(conn: Connection, name: str, refs: dict[str, int], serial: int) -> int:
    table = Base.metadata.tables[name]
    row = filler_row(table, refs, serial, now=NOW)
    return int(conn.execute(insert(table).values(row).returning(table.c.id)).scalar_one())


def _enforcing(scratch: Engine, tmp_path: Path) -> Engine:
    """The registry's own engine on the scratch database (SQLite: foreign keys on)."""
    url = scratch.url.render_as_string(hide_password=False)
    return make_engine(Settings(instance_path=tmp_path, database_url=url))


def test_upgrading_keeps_every_row_and_reference_and_downgrading_restores_the_indexes(
    scratch: Engine, tmp_path: Path
) -> None:
    migrate(scratch, "upgrade", "0009")
    ids = _seed(scratch)
    engine = _enforcing(scratch, tmp_path)
    try:
        upgrade_to_head(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            for name in UNLOOKED:
                table = Base.metadata.tables[name]
                count = conn.execute(select(func.count()).select_from(table)).scalar_one()
                assert count == (3 if name == "data_keys" else 1), name
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        for name in UNLOOKED:
            assert ("ref",) not in _unique_column_sets(engine, name), name
        keys = Base.metadata.tables["data_keys"]
        for used in (ids["data_keys"], ids["certificate_key"]):
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(delete(keys).where(keys.c.id == used))
        borrowers = Base.metadata.tables["borrowers"]
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(delete(borrowers).where(borrowers.c.id == ids["borrowers"]))
    finally:
        engine.dispose()
    migrate(scratch, "downgrade", "0009")
    for name in UNLOOKED:
        assert ("ref",) in _unique_column_sets(scratch, name), name


def test_a_migration_that_leaves_a_broken_reference_is_rolled_back(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'broken.db'}"
    plain = create_engine(url)  # SQLite's default: foreign keys off
    migrate(plain, "upgrade", "0009")
    ids = _seed(plain)
    records = Base.metadata.tables["delinquencies"]
    with plain.begin() as conn:
        conn.execute(records.update().values(data_key_id=987_654_321))
    plain.dispose()
    engine = make_engine(Settings(instance_path=tmp_path, database_url=url))
    try:
        with pytest.raises(MigrationBrokeReferences, match="delinquencies") as raised:
            upgrade_to_head(engine)
        assert "987654321" not in str(raised.value)
        assert current_revision(engine) == "0009"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert ("ref",) in _unique_column_sets(engine, "delinquencies")
        assert ids["delinquencies"]
    finally:
        engine.dispose()
