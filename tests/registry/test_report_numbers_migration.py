"""Migration 0011: on SQLite, report numbers (the receipts' log index) come from
``sqlite_sequence`` and are never given twice, for the reports written before it too."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import Table, create_engine, delete, insert, text

from conftest import migrate
from factories import filler_row
from registry.bulk import next_ids
from registry.db import make_engine, upgrade_to_head
from registry.models import Base
from registry.settings import Settings

pytestmark = pytest.mark.sqlite_only

REPORTS = cast(Table, Base.metadata.tables["reports"])
NOW = dt.datetime(2026, 11, 24, 6, 30, tzinfo=dt.UTC)


def _reports_at_0010(url: str, count: int) -> None:
    plain = create_engine(url)
    migrate(plain, "upgrade", "0010")
    with plain.begin() as conn:
        institutions = Base.metadata.tables["institutions"]
        member = conn.execute(
            insert(institutions)
            .values(filler_row(institutions, {}, 1, now=NOW))
            .returning(institutions.c.id)
        ).scalar_one()
        for n in range(1, count + 1):
            row = filler_row(REPORTS, {"institutions": member}, n, now=NOW)
            conn.execute(insert(REPORTS).values({**row, "id": n, "report_id": f"R-{n}"}))
    plain.dispose()


def test_numbers_continue_after_the_largest_ever_given(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'numbers.db'}"
    _reports_at_0010(url, 3)
    engine = make_engine(Settings(instance_path=tmp_path, database_url=url))
    try:
        upgrade_to_head(engine)
        with engine.begin() as conn:
            schema = conn.execute(text("SELECT sql FROM sqlite_schema WHERE name = 'reports'"))
            assert "AUTOINCREMENT" in schema.scalar_one()
            conn.execute(delete(REPORTS).where(REPORTS.c.id == 3))  # the newest goes
            assert next_ids(conn, [(REPORTS, 2)]) == [[4, 5]]
    finally:
        engine.dispose()
    migrate(create_engine(url), "downgrade", "0010")
    plain = create_engine(url)
    with plain.connect() as conn:
        schema = conn.execute(text("SELECT sql FROM sqlite_schema WHERE name = 'reports'"))
        assert "AUTOINCREMENT" not in schema.scalar_one()
        left = conn.execute(text("SELECT count(*) FROM sqlite_sequence WHERE name = 'reports'"))
        assert left.scalar_one() == 0
    plain.dispose()
