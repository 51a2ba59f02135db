"""The scheduled sweeps' running totals (``sweep_totals``), which ``/metrics`` reads."""

from __future__ import annotations

import datetime as dt

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlalchemy.orm import Session

from conftest import migrate
from registry.models import Base
from registry.sweep_log import record_sweep, sweep_totals

T0 = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)


def test_totals_add_up_sweep_after_sweep_by_rule(session: Session) -> None:
    with session.begin():
        record_sweep(session, {"retention": 3, "max_age": 0}, T0)
    with session.begin():
        record_sweep(session, {"retention": 4, "max_age": 2}, T0 + dt.timedelta(minutes=5))

    found = {t.rule: (t.cleared, t.sweeps, t.last_finished_at) for t in sweep_totals(session)}
    assert found == {
        "max_age": (2, 2, T0 + dt.timedelta(minutes=5)),
        "retention": (7, 2, T0 + dt.timedelta(minutes=5)),
    }


def test_a_sweep_that_rolls_back_adds_nothing(session: Session) -> None:
    with session.begin():
        record_sweep(session, {"retention": 3}, T0)
    session.begin()
    record_sweep(session, {"retention": 5}, T0 + dt.timedelta(minutes=5))
    session.rollback()

    [total] = sweep_totals(session)
    assert (total.cleared, total.sweeps, total.last_finished_at) == (3, 1, T0)


def test_0008_matches_the_model_and_goes_down_and_up(scratch: Engine) -> None:
    migrate(scratch, "upgrade", "0008")
    with scratch.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        about_it = [
            d for d in compare_metadata(context, Base.metadata) if "sweep_totals" in repr(d)
        ]
    assert about_it == []
    migrate(scratch, "downgrade", "0007")
    assert "sweep_totals" not in inspect(scratch).get_table_names()
    migrate(scratch, "upgrade", "head")
    assert "sweep_totals" in inspect(scratch).get_table_names()
