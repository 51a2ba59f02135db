"""registry.batch below HTTP: chunked commits, a failure half-way, refusals kept per report."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from factories import Member, admit, envelope, national_id, payload
from registry.batch import MAX_ENVELOPE_BYTES, Accepted, BatchIntake, Outcome, Refused
from registry.batch_apply import Prepared
from registry.intake import Intake
from registry.models import Institution, Report
from registry.policy import Policy
from registry.secrets import load_key_material
from registry.settings import Settings


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture
def intake(settings: Settings) -> Intake:
    return Intake(load_key_material(settings), Policy())


def envelopes(member: Member, n: int) -> list[bytes]:
    return [
        envelope(
            member,
            payload(
                member,
                account_ref=f"ACC-{i:04d}",
                borrower={"national_id": national_id(i), "name": "李四", "phone": "+861380000"},
            ),
        )
        for i in range(n)
    ]


def stored(engine: Engine) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(Report)) or 0


class FailingBatch(BatchIntake):
    """A batch whose n-th chunk hits a bug after its writes (not a refusal): it must stop there."""

    def __init__(self, intake: Intake, fail_at: int, commit_every: int) -> None:
        super().__init__(intake, commit_every=commit_every)
        self._chunks = 0
        self._fail_at = fail_at

    def _apply_chunk(
        self,
        session: Session,
        caller: Institution,
        prepared: list[Prepared | Refused],
        now: dt.datetime,
    ) -> list[Outcome]:
        done = super()._apply_chunk(session, caller, prepared, now)
        self._chunks += 1
        if self._chunks == self._fail_at:
            session.flush()
            raise RuntimeError("simulated failure")
        return done


def caller_of(session: Session, member: Member) -> Institution:
    found = session.scalar(select(Institution).where(Institution.code == member.code))
    assert found is not None
    return found


def test_a_failure_half_way_keeps_the_committed_chunks_and_nothing_of_the_current_one(
    engine: Engine, intake: Intake, bank: Member
) -> None:
    sent = envelopes(bank, 7)
    batch = FailingBatch(intake, fail_at=3, commit_every=2)
    with Session(engine, expire_on_commit=False) as session:
        caller = caller_of(session, bank)
        with pytest.raises(RuntimeError):
            batch.submit(session, caller, sent, dt.datetime.now(dt.UTC))
    assert stored(engine) == 4

    with Session(engine, expire_on_commit=False) as session:
        result = BatchIntake(intake).submit(
            session, caller_of(session, bank), sent, dt.datetime.now(dt.UTC)
        )
    created = [o.created for o in result.outcomes if isinstance(o, Accepted)]
    assert created == [False] * 4 + [True] * 3
    assert stored(engine) == 7


def test_outcomes_are_reported_as_they_happen_in_order(
    engine: Engine, intake: Intake, bank: Member
) -> None:
    sent = envelopes(bank, 3)
    sent.insert(1, b"[]")
    seen: list[Any] = []
    with Session(engine, expire_on_commit=False) as session:
        result = BatchIntake(intake).submit(
            session, caller_of(session, bank), sent, dt.datetime.now(dt.UTC), on_outcome=seen.append
        )
    assert seen == result.outcomes
    assert [type(o) for o in seen] == [Accepted, Refused, Accepted, Accepted]
    assert (result.accepted, result.refused) == (3, 1)


def test_an_envelope_over_the_single_report_limit_is_refused_alone(
    engine: Engine, intake: Intake, bank: Member
) -> None:
    sent = [b" " * (MAX_ENVELOPE_BYTES + 1), *envelopes(bank, 1)]
    with Session(engine, expire_on_commit=False) as session:
        result = BatchIntake(intake).submit(
            session, caller_of(session, bank), sent, dt.datetime.now(dt.UTC)
        )
    first = result.outcomes[0]
    assert isinstance(first, Refused) and first.error.code == "envelope_too_large"
    assert isinstance(result.outcomes[1], Accepted)
    assert stored(engine) == 1
