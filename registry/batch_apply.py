"""One chunk of a batch, applied with a handful of statements instead of a dozen per report.

A single report costs about fifteen statements and four ORM flushes; at batch sizes the
statements, not the cryptography, are what limit throughput. Here a chunk's look-ups are made
once (receipts, records, tombstones, borrowers, subscriptions), each report is decided in
memory by the same rules as a single report (``intake.check_transition``), and the writes go
out together: new rows as multi-row INSERTs, changed records in one ORM flush.

What this fast path does not handle goes through the single-report path, in its own SAVEPOINT,
after the pending writes are flushed so it sees them: a ``correct`` (it answers disputes) and
any report about a borrower another member watches (it raises alerts). A second report on an
account, or a report id already seen in the chunk, flushes first and is then decided against
the stored state, so reports always apply in order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from registry import lifecycle
from registry import payload as p
from registry.bulk import insert_rows
from registry.clearing import ClearReason
from registry.errors import Conflict, RegistryError
from registry.intake import (
    Intake,
    check_same_borrower,
    check_transition,
    record_cap_violations,
)
from registry.models import (
    Borrower,
    DataKey,
    Delinquency,
    Institution,
    Report,
    Subscription,
    Tombstone,
)


@dataclass(frozen=True)
class Accepted:
    """A report accepted now (``created``) or before (same bytes resent): its receipt."""

    report_id: str
    receipt: bytes
    created: bool


@dataclass(frozen=True)
class Refused:
    """A report refused with the same error a single submission would have got."""

    error: RegistryError


Outcome = Accepted | Refused


@dataclass
class Prepared:
    """A report whose envelope verified: what the chunk needs to decide it.

    ``error`` is a validation refusal that is given only if the report id is new: a resend
    gets its receipt even if the payload would not pass today's checks.
    """

    raw: bytes
    report_id: str
    digest: str
    report: p.ReportPayload | None
    error: RegistryError | None
    account_index: bytes = b""
    borrower_index: bytes | None = None


@dataclass
class _BorrowerRef:
    """A borrower the chunk refers to: stored (``id`` known) or to be inserted."""

    id: int | None
    values: dict[str, Any] | None = None
    key_values: dict[str, Any] | None = None


@dataclass
class _NewRecord:
    values: dict[str, Any]
    key_values: dict[str, Any]
    borrower: _BorrowerRef
    id: int | None = None


@dataclass
class _NewReport:
    """A report row to insert; its receipt is signed once its id (the log index) is known."""

    position: int
    item: Prepared
    values: dict[str, Any]
    record: _NewRecord | None = None
    record_id: int | None = None
    key: bytes | None = None
    record_ref: str | None = None
    id: int | None = None


@dataclass
class _Clear:
    record: Delinquency
    reason: ClearReason
    account_ref: str


@dataclass
class _Pending:
    records: list[_NewRecord] = field(default_factory=list)
    reports: list[_NewReport] = field(default_factory=list)
    clears: list[_Clear] = field(default_factory=list)
    accounts: set[bytes] = field(default_factory=set)
    report_ids: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.records or self.reports or self.clears)


SlowPath = Callable[[Session, Institution, bytes, dt.datetime], Outcome]


class ChunkApplier:
    """Applies one chunk of prepared reports in the caller's transaction (it does not commit)."""

    def __init__(
        self,
        intake: Intake,
        session: Session,
        caller: Institution,
        now: dt.datetime,
        slow_path: SlowPath,
    ) -> None:
        self._intake = intake
        self._vault = intake.vault
        self._material = intake.material
        self._policy = intake.policy
        self._clearer = intake.clearer
        self._session = session
        self._caller = caller
        self._now = now
        self._slow_path = slow_path
        self._pending = _Pending()
        self._outcomes: dict[int, Outcome] = {}
        self._receipts: dict[str, tuple[str, bytes] | None] = {}
        self._records: dict[bytes, Delinquency | None] = {}
        self._cleared: dict[bytes, int | None] = {}
        self._borrowers: dict[bytes, _BorrowerRef | None] = {}
        self._watched: dict[bytes, bool] = {}
        self._held: list[object] = []

    # --- the chunk ---------------------------------------------------------------------

    def apply(self, items: Sequence[Prepared | Refused]) -> list[Outcome]:
        prepared = [i for i in items if isinstance(i, Prepared)]
        for item in prepared:
            if item.report is not None:
                item.account_index = self._intake.account_index(
                    self._caller, item.report.account_ref
                )
                if item.report.state is not None:
                    item.borrower_index = self._intake.borrower_index(
                        item.report.state.borrower.national_id
                    )
        self._prefetch(prepared)
        for position, entry in enumerate(items):
            if isinstance(entry, Refused):
                self._outcomes[position] = entry
            else:
                self._decide(position, entry)
        self._flush()
        return [self._outcomes[i] for i in range(len(items))]

    def _decide(self, position: int, item: Prepared) -> None:
        pending = self._pending
        if item.report_id in pending.report_ids or item.account_index in pending.accounts:
            # The stored state must be seen first: reports apply in order.
            self._flush()
        stored = self._receipt(item.report_id)
        if stored is not None:
            digest, receipt = stored
            if digest == item.digest:
                self._outcomes[position] = Accepted(item.report_id, receipt, created=False)
            else:
                self._outcomes[position] = Refused(
                    Conflict(
                        "this report id was already accepted with different bytes; "
                        "a report id is never reused",
                        code="report_id_conflict",
                        extra={"report_id": item.report_id},
                    )
                )
            return
        if item.error is not None or item.report is None:
            assert item.error is not None
            record_cap_violations(self._session, self._caller, item.error, self._now)
            self._outcomes[position] = Refused(item.error)
            return
        report = item.report
        current = self._record(item.account_index)
        borrower_index = item.borrower_index
        if borrower_index is None and current is not None:
            borrower_index = current.borrower.id_index
        if report.kind is p.Kind.CORRECT or (
            borrower_index is not None and self._is_watched(borrower_index)
        ):
            self._slow(position, item)
            return
        try:
            cleared_at = self._cleared_at(item.account_index) if current is None else None
            check_transition(report, current, cleared_at)
            if report.kind is p.Kind.OPEN:
                self._plan_open(position, item)
            else:
                assert current is not None
                self._plan_change(position, item, current)
        except RegistryError as exc:
            self._outcomes[position] = Refused(exc)
            return
        self._pending.accounts.add(item.account_index)
        self._pending.report_ids.add(item.report_id)

    # --- look-ups (once per chunk, again only for what a flush changed) -----------------

    def _prefetch(self, items: list[Prepared]) -> None:
        session, caller = self._session, self._caller
        ids = {i.report_id for i in items}
        for report_id in ids:
            self._receipts[report_id] = None
        if ids:
            for report_id, digest, receipt in session.execute(
                select(Report.report_id, Report.envelope_sha256, Report.receipt).where(
                    Report.institution_id == caller.id, Report.report_id.in_(ids)
                )
            ):
                self._receipts[report_id] = (digest, receipt)
        accounts = {i.account_index for i in items if i.report is not None}
        if accounts:
            self._load_records(accounts)
        indexes = {i.borrower_index for i in items if i.borrower_index is not None}
        indexes |= {r.borrower.id_index for r in self._records.values() if r is not None}
        wanted = indexes - set(self._borrowers)
        if wanted:
            for borrower in session.scalars(select(Borrower).where(Borrower.id_index.in_(wanted))):
                self._borrowers[borrower.id_index] = _BorrowerRef(borrower.id)
            for index in wanted:
                self._borrowers.setdefault(index, None)
        self._load_watched(indexes)

    def _load_records(self, accounts: set[bytes]) -> None:
        session, caller = self._session, self._caller
        # NOTE: rows are locked in id order, so two chunks never wait for each other in a cycle.
        records = list(
            session.scalars(
                select(Delinquency)
                .where(
                    Delinquency.institution_id == caller.id,
                    Delinquency.account_index.in_(accounts),
                )
                .order_by(Delinquency.id)
                .with_for_update(of=Delinquency)
            )
        )
        # Borrowers and data keys enter the identity map, so record.borrower costs no query.
        # NOTE: the identity map holds unchanged objects weakly: they are kept here, or they
        # would be gone (and lazily loaded one by one) before they are used.
        borrower_ids = {r.borrower_id for r in records}
        key_ids = {r.data_key_id for r in records}
        if borrower_ids:
            self._held.extend(
                session.scalars(select(Borrower).where(Borrower.id.in_(borrower_ids)))
            )
            self._held.extend(session.scalars(select(DataKey).where(DataKey.id.in_(key_ids))))
        for account in accounts:
            self._records[account] = None
        for record in records:
            self._records[record.account_index] = record
        missing = [a for a in accounts if self._records[a] is None]
        for account in missing:
            self._cleared[account] = None
        if missing:
            for found, last in session.execute(
                select(Tombstone.account_index, func.max(Tombstone.last_sequence))
                .where(Tombstone.institution_id == caller.id, Tombstone.account_index.in_(missing))
                .group_by(Tombstone.account_index)
            ):
                if found is not None:
                    self._cleared[found] = last

    def _load_watched(self, indexes: set[bytes]) -> None:
        wanted = indexes - set(self._watched)
        if not wanted:
            return
        for index in wanted:
            self._watched[index] = False
        for (index,) in self._session.execute(
            select(Subscription.borrower_index)
            .where(
                Subscription.borrower_index.in_(wanted),
                Subscription.ended_at.is_(None),
                Subscription.institution_id != self._caller.id,
            )
            .distinct()
        ):
            self._watched[index] = True

    def _receipt(self, report_id: str) -> tuple[str, bytes] | None:
        if report_id not in self._receipts:
            row = self._session.execute(
                select(Report.envelope_sha256, Report.receipt).where(
                    Report.institution_id == self._caller.id, Report.report_id == report_id
                )
            ).first()
            self._receipts[report_id] = None if row is None else (row[0], row[1])
        return self._receipts[report_id]

    def _record(self, account: bytes) -> Delinquency | None:
        if account not in self._records:
            self._load_records({account})
        return self._records[account]

    def _cleared_at(self, account: bytes) -> int | None:
        if account not in self._cleared:
            self._load_records({account})
        return self._cleared[account]

    def _borrower(self, index: bytes) -> _BorrowerRef | None:
        if index not in self._borrowers:
            found = self._session.scalar(select(Borrower.id).where(Borrower.id_index == index))
            self._borrowers[index] = None if found is None else _BorrowerRef(found)
        return self._borrowers[index]

    def _is_watched(self, index: bytes) -> bool:
        self._load_watched({index})
        return self._watched[index]

    # --- planning (in memory; nothing is written until the flush) -----------------------

    def _plan_open(self, position: int, item: Prepared) -> None:
        report = item.report
        assert report is not None and report.state is not None and item.borrower_index
        now = self._now
        borrower = self._borrower(item.borrower_index)
        if borrower is None:
            key_values, values = self._intake.borrower_rows(
                report.state.borrower.national_id, item.borrower_index, now
            )
            borrower = _BorrowerRef(None, values=values, key_values=key_values)
            self._borrowers[item.borrower_index] = borrower
        key_values, key, values = self._intake.record_rows(
            self._caller, report, report.state, item.account_index, now
        )
        record = _NewRecord(values, key_values, borrower)
        self._pending.records.append(record)
        self._add_report(position, item, record=record, key=key, record_ref=values["ref"])

    def _plan_change(self, position: int, item: Prepared, current: Delinquency) -> None:
        """An update, payment, settlement or withdrawal of a stored record.

        Every check that can refuse the report runs before the record is touched.
        """
        report = item.report
        assert report is not None
        if report.state is not None:
            assert item.borrower_index is not None
            check_same_borrower(current.borrower.id_index, item.borrower_index)
        paid_off = False
        if report.payment is not None:
            paid_off = lifecycle.apply_payment(current, report.payment.amount)
        key = self._vault.open_key(current.data_key)
        current.sequence = report.sequence
        current.updated_at = self._now
        if report.state is not None:
            for column, value in self._intake.state_columns(current.ref, report.state, key).items():
                setattr(current, column, value)
        settlement: tuple[p.SettlementType, dt.date] | None = None
        if report.payment is not None and paid_off:
            settlement = (p.SettlementType.PAID_IN_FULL, report.payment.date)
        elif report.settlement is not None:
            settlement = (report.settlement.type, report.settlement.date)
        if settlement is not None:
            current.status = "settled"
            current.settled_on = settlement[1]
            current.settlement_type = settlement[0].value
            if self._policy.clear_on_settlement:
                self._clear(position, item, current, ClearReason.SETTLED)
                return
        elif report.withdrawal is not None:
            reason = (
                ClearReason.FRAUD
                if report.withdrawal.reason is p.WithdrawalReason.FRAUD
                else ClearReason.REPORTED_IN_ERROR
            )
            self._clear(position, item, current, reason)
            return
        self._add_report(position, item, record_id=current.id, key=key, record_ref=current.ref)

    def _clear(
        self, position: int, item: Prepared, record: Delinquency, reason: ClearReason
    ) -> None:
        assert item.report is not None
        self._pending.clears.append(_Clear(record, reason, item.report.account_ref))
        self._add_report(position, item)

    def _add_report(
        self,
        position: int,
        item: Prepared,
        *,
        record: _NewRecord | None = None,
        record_id: int | None = None,
        key: bytes | None = None,
        record_ref: str | None = None,
    ) -> None:
        report = item.report
        assert report is not None
        values = self._intake.report_row(self._caller, report, item.digest, self._now, record_id)
        row = _NewReport(position, item, values, record, record_id, key, record_ref)
        if key is None:
            # A report that cleared its record: a receipt without a log index, no envelope.
            values["receipt"] = self._sign(row, None)
        self._pending.reports.append(row)

    def _sign(self, row: _NewReport, log_index: int | None) -> bytes:
        return self._intake.sign_row(self._caller.code, row.values, log_index)

    # --- writing -------------------------------------------------------------------------

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            pending.accounts.clear()
            pending.report_ids.clear()
            return
        session = self._session
        new_borrowers = [r.borrower for r in pending.records if r.borrower.id is None]
        new_borrowers = list({id(b): b for b in new_borrowers}.values())
        key_rows = [b.key_values or {} for b in new_borrowers]
        key_rows += [r.key_values for r in pending.records]
        key_ids = self._insert(DataKey, key_rows)
        for borrower, key_id in zip(new_borrowers, key_ids, strict=False):
            assert borrower.values is not None
            borrower.values["data_key_id"] = key_id
        borrower_ids = self._insert(Borrower, [b.values or {} for b in new_borrowers])
        for borrower, borrower_id in zip(new_borrowers, borrower_ids, strict=True):
            borrower.id = borrower_id
        for record, key_id in zip(pending.records, key_ids[len(new_borrowers) :], strict=True):
            record.values["data_key_id"] = key_id
            record.values["borrower_id"] = record.borrower.id
        record_ids = self._insert(Delinquency, [r.values for r in pending.records])
        for record, record_id in zip(pending.records, record_ids, strict=True):
            record.id = record_id
        session.flush()  # the changed records (updates, settlements) and counted refusals
        cleared_borrowers = {c.record.borrower.id_index for c in pending.clears}
        for reason in ClearReason:
            clears = [c for c in pending.clears if c.reason is reason]
            self._clearer.clear_many(
                session,
                [c.record for c in clears],
                reason,
                self._now,
                account_refs={c.record.id: c.account_ref for c in clears},
            )
        for row in pending.reports:
            if row.record is not None:
                row.values["delinquency_id"] = row.record.id
            if row.key is not None:
                assert row.record_ref is not None
                row.values["envelope_ct"] = self._vault.seal(
                    row.key,
                    "reports",
                    "envelope",
                    f"{row.record_ref}/{row.values['report_id']}",
                    row.item.raw,
                )
        report_ids = self._insert(Report, [r.values for r in pending.reports])
        signed = []
        for row, report_id in zip(pending.reports, report_ids, strict=True):
            if row.key is not None:
                row.values["receipt"] = self._sign(row, report_id)
                signed.append({"rid": report_id, "receipt": row.values["receipt"]})
        if signed:
            session.connection().execute(
                update(Report.__table__)  # type: ignore[arg-type]
                .where(Report.__table__.c.id == bindparam("rid"))
                .values(receipt=bindparam("receipt")),
                signed,
            )
        for row in pending.reports:
            receipt = row.values["receipt"]
            self._receipts[row.values["report_id"]] = (row.item.digest, receipt)
            self._outcomes[row.position] = Accepted(row.item.report_id, receipt, created=True)
        # What the flush changed is read again from the database when next needed.
        for account in pending.accounts:
            self._records.pop(account, None)
            self._cleared.pop(account, None)
        for index in cleared_borrowers:
            self._borrowers.pop(index, None)
        self._pending = _Pending()

    def _insert(self, model: type[Any], rows: list[dict[str, Any]]) -> list[int]:
        """Insert ``rows`` in one statement (or COPY); their ids, in the order given."""
        # NOTE: Core on the session's connection, not the ORM's bulk insert: these rows never
        # become ORM objects, and the ORM's per-row bookkeeping cost more than the insert.
        return insert_rows(self._session.connection(), model.__table__, rows)

    def _slow(self, position: int, item: Prepared) -> None:
        """The single-report path for one report, after the pending writes."""
        self._flush()
        self._outcomes[position] = self._slow_path(self._session, self._caller, item.raw, self._now)
        # NOTE: the single-report path leaves ORM objects in the session that must not take
        # part in later flushes; everything it did is flushed, so it stays in the transaction.
        session = self._session
        session.flush()
        session.expunge_all()
        session.add(self._caller)
        self._records.clear()
        self._cleared.clear()
        self._borrowers.clear()
        self._held.clear()
        self._receipts.pop(item.report_id, None)
