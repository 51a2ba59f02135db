"""What the scheduled sweeps have cleared, kept where every web host can read it.

``registry worker`` runs the sweeper in its own process, usually on its own host, so counting
its clearings in that process's memory would show them to nobody. Each finished sweep adds its
figures to ``sweep_totals`` instead, and ``/metrics`` reads them from the database: the
operator sees the records cleared by rule and when a sweep last finished (alert when it is
older than a few intervals: nothing is being cleared).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from registry.models import SweepTotal

_TOTALS = cast(Table, SweepTotal.__table__)


def record_sweep(session: Session, cleared: Mapping[str, int], finished_at: dt.datetime) -> None:
    """Add one finished sweep's clearings, by rule, to the running totals.

    One upsert per rule, so two sweeps finishing at once both count (``registry sweep`` may run
    beside the worker).
    """
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for rule, count in cleared.items():
        statement = insert(_TOTALS).values(
            rule=rule, cleared=count, sweeps=1, last_finished_at=finished_at
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[_TOTALS.c.rule],
                set_={
                    "cleared": _TOTALS.c.cleared + statement.excluded.cleared,
                    "sweeps": _TOTALS.c.sweeps + 1,
                    "last_finished_at": statement.excluded.last_finished_at,
                },
            )
        )


def sweep_totals(session: Session) -> list[SweepTotal]:
    """Every rule's totals, by rule name."""
    return list(session.scalars(select(SweepTotal).order_by(SweepTotal.rule)))
