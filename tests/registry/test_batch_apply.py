"""registry.batch_apply: a batch decides every report exactly as single submissions would.

The set-based applier re-implements the order of intake's writes, so it is checked against the
single-report path itself: random report sequences (opens, updates, corrections, payments,
settlements, withdrawals, resends, reused report ids) go to one member as batches, with random
chunk sizes, and to another member one by one. Every outcome and the stored state must agree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from factories import Member, admit, envelope, report_of_kind
from registry.batch import Accepted, BatchIntake, Outcome, Refused
from registry.batch_apply import ChunkApplier
from registry.errors import RegistryError
from registry.intake import Intake
from registry.models import Base, Borrower, Delinquency, Institution, Report, Tombstone
from registry.policy import Policy
from registry.secrets import load_key_material
from registry.settings import Settings

KINDS = ["open", "open", "update", "correct", "payment", "payment", "settle", "withdraw"]
ACCOUNTS = 3

step = st.tuples(
    st.integers(0, ACCOUNTS - 1),  # account
    st.sampled_from([*KINDS, "resend", "reuse"]),
    st.sampled_from([-1, 0, 1, 1, 1, 2]),  # sequence step from the highest sent
    st.integers(1, 3),  # borrower
    st.sampled_from(["100.00", "5000.00"]),  # principal
    st.sampled_from([1, 95, 400]),  # days past due
    st.sampled_from(["60.00", "5000.00", "30000.00"]),  # payment
)


def _document(
    number: int, kind: str, seq: int, borrower: int, principal: str, dpd: int, paid: str
) -> dict[str, Any]:
    return report_of_kind(
        "BANKA",
        account_ref=f"ACCT-{number}",
        kind=kind,
        sequence=seq,
        borrower=borrower,
        principal=principal,
        days_past_due=dpd,
        paid=paid,
    )


def _documents(steps: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The report documents the steps describe (as BANKA's; BANKB's differ in institution)."""
    sent: list[dict[str, Any]] = []
    highest = [0] * ACCOUNTS
    for number, kind, delta, borrower, principal, dpd, paid in steps:
        if kind == "resend" and sent:
            sent.append(sent[-1])
            continue
        if kind == "reuse" and sent:
            sent.append({**sent[-1], "sequence": sent[-1]["sequence"] + 7})
            continue
        if kind in ("resend", "reuse"):
            kind = "open"
        seq = max(1, highest[number] + delta)
        highest[number] = max(highest[number], seq)
        sent.append(_document(number, kind, seq, borrower, principal, dpd, paid))
    return sent


def _as(member: Member, doc: dict[str, Any]) -> bytes:
    return envelope(member, {**doc, "institution": member.code})


def _summary(outcome: Outcome) -> tuple[str, str | bool]:
    if isinstance(outcome, Accepted):
        return ("accepted", outcome.created)
    return ("refused", outcome.error.code)


def _state(session: Session, intake: Intake, caller: Institution) -> tuple[Any, ...]:
    """What a member's reports left behind, with accounts named by their reference."""
    session.expire_all()
    names = {intake.account_index(caller, f"ACCT-{n}"): n for n in range(ACCOUNTS)}
    records = sorted(
        (names[r.account_index], r.sequence, r.status, r.overdue_principal, r.overdue_interest,
         r.penalty, r.days_past_due, r.classification, r.borrower.id_index)
        for r in session.scalars(
            select(Delinquency).where(Delinquency.institution_id == caller.id)
        )
    )  # fmt: skip
    tombstones = sorted(
        (names[t.account_index] if t.account_index else -1, t.last_sequence, t.reason)
        for t in session.scalars(select(Tombstone).where(Tombstone.institution_id == caller.id))
    )
    reports = sorted(
        (r.report_id, r.sequence, r.kind, r.delinquency_id is not None)
        for r in session.scalars(select(Report).where(Report.institution_id == caller.id))
    )
    return (records, tombstones, reports)


def _fresh(
    engine: Engine, settings: Settings, *codes: str
) -> tuple[Intake, sessionmaker[Session], list[Member]]:
    """An empty registry (hypothesis runs one test many times on the same database), its
    intake, a session factory, and the members ``codes`` admitted."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    with sessions() as setup:
        members = [admit(setup, code) for code in codes]
    return Intake(load_key_material(settings), Policy()), sessions, members


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(step, min_size=1, max_size=30), chunk=st.integers(1, 12))
def test_a_batch_decides_every_report_as_single_submissions_do(
    engine: Engine, settings: Settings, steps: list[tuple[Any, ...]], chunk: int
) -> None:
    intake, sessions, [batched, single] = _fresh(engine, settings, "BANKA", "BANKB")
    documents = _documents(steps)
    now = dt.datetime.now(dt.UTC)
    with sessions() as session:
        caller_a = session.scalars(select(Institution).where(Institution.code == "BANKA")).one()
        caller_b = session.scalars(select(Institution).where(Institution.code == "BANKB")).one()
        result = BatchIntake(intake, commit_every=chunk).submit(
            session, caller_a, [_as(batched, d) for d in documents], now
        )
        expected: list[Outcome] = []
        for doc in documents:
            try:
                done = intake.submit(session, caller_b, _as(single, doc), now)
                expected.append(Accepted(done.report_id, done.receipt, done.created))
            except RegistryError as exc:
                expected.append(Refused(exc))
        assert [_summary(o) for o in result.outcomes] == [_summary(o) for o in expected]
        assert _state(session, intake, caller_a) == _state(session, intake, caller_b)


def test_a_batch_of_opens_settlements_and_updates_stores_what_it_receipts(
    engine: Engine, settings: Settings
) -> None:
    """The common shape of a month's batch, checked row by row against its receipts."""
    intake, sessions, [bank] = _fresh(engine, settings, "BANKA")
    opens = [_document(n % ACCOUNTS, "open", 1, n, "100.00", 95, "") for n in range(ACCOUNTS)]
    updates = [_document(n, "update", 2, n, "5000.00", 400, "") for n in range(ACCOUNTS)]
    settle = _document(0, "settle", 3, 0, "", 0, "")
    with sessions() as session:
        caller = session.scalars(select(Institution)).one()
        result = BatchIntake(intake).submit(
            session,
            caller,
            [_as(bank, d) for d in [*opens, *updates, settle]],
            dt.datetime.now(dt.UTC),
        )
        assert [_summary(o) for o in result.outcomes] == [("accepted", True)] * 7
        session.expire_all()
        stored = {r.report_id: r for r in session.scalars(select(Report))}
        # Account 0 was settled and cleared: its open and update rows went with the record.
        gone = {opens[0]["report_id"], updates[0]["report_id"]}
        assert set(stored) == {d["report_id"] for d in [*opens, *updates, settle]} - gone
        for outcome in result.outcomes:
            assert isinstance(outcome, Accepted)
            if outcome.report_id not in gone:
                assert stored[outcome.report_id].receipt == outcome.receipt
        assert stored[settle["report_id"]].delinquency_id is None
        live = list(session.scalars(select(Delinquency)))
        assert sorted(r.days_past_due for r in live) == [400, 400]


def test_a_chunk_of_opens_goes_out_in_the_same_statements_whatever_its_size(
    engine: Engine, settings: Settings
) -> None:
    """New rows go out as one statement per table, not one per row (on either engine)."""
    intake, sessions, [bank] = _fresh(engine, settings, "BANKA")
    sent: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    counts = []
    for first, size in ((0, 3), (100, 30)):
        documents = [
            _document(n, "open", 1, n, "100.00", 95, "") for n in range(first, first + size)
        ]
        with sessions() as session:
            caller = session.scalars(select(Institution)).one()
            sent.clear()
            event.listen(engine, "before_cursor_execute", note)
            try:
                result = BatchIntake(intake).submit(
                    session, caller, [_as(bank, d) for d in documents], dt.datetime.now(dt.UTC)
                )
            finally:
                event.remove(engine, "before_cursor_execute", note)
        assert [_summary(o) for o in result.outcomes] == [("accepted", True)] * size
        counts.append(len(sent))
    assert counts[0] == counts[1], sent


@pytest.mark.postgresql_only
def test_a_borrower_inserted_by_a_concurrent_writer_sends_the_chunk_report_by_report(
    engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another member opens the same new borrower between the chunk's look-ups and its writes:
    the chunk's COPY meets the unique key, and the chunk is applied again, report by report,
    finding that borrower (a unique-key race must surface as an IntegrityError to do so)."""
    intake, sessions, [bank, rival] = _fresh(engine, settings, "BANKA", "BANKB")
    doc = _document(0, "open", 1, 7, "100.00", 95, "")
    original = ChunkApplier._prefetch

    def racing(self: ChunkApplier, items: list[Any]) -> None:
        original(self, items)
        monkeypatch.setattr(ChunkApplier, "_prefetch", original)
        with sessions() as other:
            rival_member = other.scalars(select(Institution).where(Institution.code == "BANKB"))
            intake.submit(other, rival_member.one(), _as(rival, doc), dt.datetime.now(dt.UTC))

    monkeypatch.setattr(ChunkApplier, "_prefetch", racing)
    with sessions() as session:
        caller = session.scalars(select(Institution).where(Institution.code == "BANKA")).one()
        result = BatchIntake(intake).submit(
            session, caller, [_as(bank, doc)], dt.datetime.now(dt.UTC)
        )
    assert [_summary(o) for o in result.outcomes] == [("accepted", True)]
    with sessions() as check:
        assert len(list(check.scalars(select(Borrower)))) == 1
        assert len(list(check.scalars(select(Delinquency)))) == 2


@contextmanager
def _statements_sent(engine: Engine) -> Iterator[list[str]]:
    sent: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", note)


@pytest.mark.parametrize("stored_first", [False, True])
def test_reports_on_accounts_the_chunk_already_touched_are_decided_in_memory(
    engine: Engine, settings: Settings, stored_first: bool
) -> None:
    """Update, payment and settlement of accounts opened (or changed) earlier in the same
    chunk are decided against the chunk's own state: the chunk sends the same statements
    whether it holds 3 such chains or 30 (no flush and look-up again per account)."""
    intake, sessions, [bank] = _fresh(engine, settings, "BANKA")
    counts = []
    total = 0
    for first, size in ((0, 3), (100, 30)):
        total += size
        numbers = range(first, first + size)
        opens = [_document(n, "open", 1, n, "100.00", 95, "") for n in numbers]
        chain = [
            *(_document(n, "update", 2, n, "5000.00", 400, "") for n in numbers),
            *(_document(n, "payment", 3, n, "", 0, "60.00") for n in numbers),
            *(_document(n, "settle", 4, n, "", 0, "") for n in numbers),
        ]
        now = dt.datetime.now(dt.UTC)
        with sessions() as session:
            caller = session.scalars(select(Institution)).one()
            if stored_first:
                BatchIntake(intake).submit(session, caller, [_as(bank, d) for d in opens], now)
                sent_docs = chain
            else:
                sent_docs = [*opens, *chain]
            sent_envelopes = [_as(bank, d) for d in sent_docs]
            with _statements_sent(engine) as sent:
                result = BatchIntake(intake).submit(session, caller, sent_envelopes, now)
            counts.append(len(sent))
        assert [_summary(o) for o in result.outcomes] == [("accepted", True)] * len(sent_docs)
        with sessions() as check:
            assert list(check.scalars(select(Delinquency))) == []
            tombstones = list(check.scalars(select(Tombstone)))
            kinds = list(check.scalars(select(Report.kind)))
        assert [t.last_sequence for t in tombstones] == [4] * total
        # What is left of each account is its settlement (the record's reports went with it).
        assert kinds == ["settle"] * total
    assert counts[0] == counts[1]


def test_a_report_resent_after_its_account_was_cleared_and_opened_again_in_one_chunk(
    engine: Engine, settings: Settings
) -> None:
    """Open, settle, open again, then the second open resent, all in one chunk: the resend
    gets its receipt (the chunk flushes before the new open, and must remember the new
    open's report id after that flush)."""
    intake, sessions, [bank] = _fresh(engine, settings, "BANKA")
    reopen = _document(0, "open", 3, 1, "100.00", 95, "")
    documents = [
        _document(0, "open", 1, 1, "100.00", 95, ""),
        _document(0, "settle", 2, 1, "", 0, ""),
        reopen,
        reopen,
    ]
    with sessions() as session:
        caller = session.scalars(select(Institution)).one()
        result = BatchIntake(intake).submit(
            session, caller, [_as(bank, d) for d in documents], dt.datetime.now(dt.UTC)
        )
    assert [_summary(o) for o in result.outcomes] == [("accepted", True)] * 3 + [
        ("accepted", False)
    ]
    first, again = result.outcomes[2], result.outcomes[3]
    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert again.receipt == first.receipt
