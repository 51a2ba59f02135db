"""Random report sequences over many accounts keep the registry's invariants.

Balances never go negative; the classification always agrees with the days past due; a cleared
record never comes back (only a new ``open`` with a later sequence starts a new one); and every
refused report leaves the database exactly as it was.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from factories import admit, envelope, report_of_kind
from registry.errors import RegistryError
from registry.intake import Intake
from registry.models import (
    Base,
    Borrower,
    ClearanceCertificate,
    DataKey,
    Delinquency,
    Institution,
    Report,
    Tombstone,
)
from registry.policy import Policy
from registry.secrets import load_key_material
from registry.settings import Settings

# Weighted towards reports that can apply, so long valid histories are common.
KINDS = ["open", "open", "update", "correct", "payment", "payment", "payment", "settle", "withdraw"]

step = st.tuples(
    st.integers(0, 1),  # account
    st.sampled_from(KINDS),
    st.sampled_from([-1, 0, 1, 1, 1, 1, 1, 2]),  # sequence step from the last one we know
    st.sampled_from(["100.00", "5000.00", "20000.00"]),  # principal
    st.sampled_from([1, 45, 95, 130, 200, 400]),  # days past due
    st.sampled_from(["0.50", "60.00", "5000.00", "30000.00"]),  # payment
)


@dataclass
class Account:
    sequence: int = 0
    live: bool = False
    cleared: bool = False
    history: list[str] = field(default_factory=list)


def _snapshot(session: Session) -> tuple[Any, ...]:
    session.expire_all()
    rows = session.execute(
        select(
            Delinquency.account_index, Delinquency.sequence, Delinquency.overdue_principal,
            Delinquency.overdue_interest, Delinquency.penalty, Delinquency.days_past_due,
            Delinquency.classification, Delinquency.status,
        ).order_by(Delinquency.account_index)
    ).all()  # fmt: skip
    counts = tuple(
        session.scalar(select(func.count()).select_from(m)) or 0
        for m in (Report, Tombstone, Borrower, DataKey, ClearanceCertificate)
    )
    session.commit()
    return (tuple(tuple(r) for r in rows), counts)


def _wipe(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(step, min_size=1, max_size=25))
def test_random_report_sequences_keep_the_invariants(
    engine: Engine, settings: Settings, steps: list[tuple[Any, ...]]
) -> None:
    _wipe(engine)
    policy = Policy()
    intake = Intake(load_key_material(settings), policy)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    with sessions() as setup:
        member = admit(setup, "BANKA")
        caller = setup.scalars(select(Institution)).one()
    accounts = [Account() for _ in range(2)]
    with sessions() as session:
        for number, kind, delta, principal, dpd, paid in steps:
            account = accounts[number]
            seq = max(1, account.sequence + delta)
            doc = report_of_kind(
                member,
                account_ref=f"ACCT-{number}",
                kind=kind,
                sequence=seq,
                borrower=number + 1,
                principal=principal,
                days_past_due=dpd,
                paid=paid,
            )
            before = _snapshot(session)
            try:
                intake.submit(session, caller, envelope(member, doc), dt.datetime.now(dt.UTC))
            except RegistryError:
                assert _snapshot(session) == before, f"a refused {kind} changed the database"
                continue
            if account.cleared and not account.live:
                assert kind == "open", f"a {kind} was accepted for a cleared account"
            account.sequence = seq
            account.history.append(kind)
            if kind == "open":
                account.live = True
            live_rows = session.scalar(select(func.count()).select_from(Delinquency)) or 0
            settled = kind in ("settle", "withdraw") or (
                kind == "payment" and live_rows < sum(a.live for a in accounts)
            )
            if settled:
                account.live, account.cleared = False, True
            session.commit()
            _check_invariants(session, policy, accounts)
    _wipe(engine)


def _check_invariants(session: Session, policy: Policy, accounts: list[Account]) -> None:
    session.expire_all()
    records = list(session.scalars(select(Delinquency)))
    assert len(records) == sum(a.live for a in accounts)
    for record in records:
        assert min(record.overdue_principal, record.overdue_interest, record.penalty) >= 0
        assert record.classification == policy.classify(record.product, record.days_past_due)
    session.commit()
