"""One chunk of a batch, decided in memory and written with a handful of statements.

A single report costs about ten statements; at batch sizes the statements, not the
cryptography, would limit throughput. Here a chunk's look-ups are made once (receipts, records,
tombstones, borrowers, subscriptions), each report is decided in memory by the same rules as a
single report (``intake.check_transition``), and the writes go out together: new rows with ids
taken up front (``registry.bulk``), one statement per table, changed records in one ORM flush,
clearings by ``Clearer.clear_many``.

What depends on a report alone is built before the write transaction (:func:`prepare`): its
blind indexes and, for an open, the record's data key, sealed fields and stored envelope, and
a new borrower's row. On SQLite that work then runs while another worker holds the write lock.

A chain of reports on one account within a chunk (open, then payment, then settle) is decided
against the account as the chunk left it, in memory. What this fast path does not handle goes
through the single-report path, in its own SAVEPOINT, after the pending writes are flushed so it
sees them: a ``correct`` (it answers disputes) and any report about a borrower another member
watches (it raises alerts). A report id already seen in the chunk, or an open of an account
whose record the chunk cleared, flushes first and is then decided against the stored state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    Select,
    String,
    Table,
    Update,
    any_,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from registry import bulk, lifecycle
from registry import payload as p
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

_DATA_KEYS = cast(Table, DataKey.__table__)
_BORROWERS = cast(Table, Borrower.__table__)
_RECORDS = cast(Table, Delinquency.__table__)
_REPORTS = cast(Table, Report.__table__)
_TOMBSTONES = cast(Table, Tombstone.__table__)
_SUBSCRIPTIONS = cast(Table, Subscription.__table__)


def _among(column: Any, name: str, dialect: str) -> ColumnElement[bool]:
    """``column`` is one of the list bound as ``name``: one array parameter on PostgreSQL (the
    statement stays the same whatever the list's length), an expanded ``IN`` elsewhere."""
    if dialect == "postgresql":
        kind = LargeBinary() if isinstance(column.type, LargeBinary) else String()
        return cast(
            ColumnElement[bool],
            column == any_(bindparam(name, type_=postgresql.ARRAY(kind))),
        )
    return cast(ColumnElement[bool], column.in_(bindparam(name, expanding=True)))


_STATEMENTS: dict[tuple[str, str], Select[Any]] = {}


def _statement(dialect: str, name: str) -> Select[Any]:
    """The chunk's look-ups, built once per dialect (building one costs about what running it
    does); parameters ``institution_id`` and the list each names."""
    found = _STATEMENTS.get((dialect, name))
    if found is not None:
        return found
    records, keys, borrowers = _RECORDS.c, _DATA_KEYS.c, _BORROWERS.c
    own = _RECORDS.c.institution_id == bindparam("institution_id")
    statements: dict[str, Select[Any]] = {
        "receipts": select(
            _REPORTS.c.report_id, _REPORTS.c.envelope_sha256, _REPORTS.c.receipt
        ).where(
            _REPORTS.c.institution_id == bindparam("institution_id"),
            _among(_REPORTS.c.report_id, "report_ids", dialect),
        ),
        # NOTE: rows are locked in id order, so two chunks never wait for each other in a cycle.
        "records": select(
            *(records[name] for name in _STORED_COLUMNS),
            borrowers.id_index.label("borrower_index"),
            keys.ref.label("key_ref"),
            keys.master_version.label("key_version"),
            keys.wrapped.label("key_wrapped"),
        )
        .join_from(_RECORDS, _BORROWERS, borrowers.id == records.borrower_id)
        .join(_DATA_KEYS, keys.id == records.data_key_id)
        .where(own, _among(records.account_index, "accounts", dialect))
        .order_by(records.id)
        .with_for_update(of=_RECORDS),
        "tombstones": select(_TOMBSTONES.c.account_index, func.max(_TOMBSTONES.c.last_sequence))
        .where(
            _TOMBSTONES.c.institution_id == bindparam("institution_id"),
            _among(_TOMBSTONES.c.account_index, "accounts", dialect),
        )
        .group_by(_TOMBSTONES.c.account_index),
        "borrowers": select(borrowers.id, borrowers.id_index).where(
            _among(borrowers.id_index, "indexes", dialect)
        ),
        "watched": select(_SUBSCRIPTIONS.c.borrower_index)
        .where(
            _among(_SUBSCRIPTIONS.c.borrower_index, "indexes", dialect),
            _SUBSCRIPTIONS.c.ended_at.is_(None),
            _SUBSCRIPTIONS.c.institution_id != bindparam("institution_id"),
        )
        .distinct(),
    }
    for key, statement in statements.items():
        _STATEMENTS[(dialect, key)] = statement
    return statements[name]


_STORED_COLUMNS = (
    "id",
    "ref",
    "institution_id",
    "account_index",
    "borrower_id",
    "data_key_id",
    "sequence",
    "status",
    "product",
    "first_delinquency_date",
    "settled_on",
    "penalty",
    "overdue_interest",
    "overdue_principal",
)
"""What deciding a report on a stored record reads of it (plus its borrower's blind index and
its data key's wrapping): the account rules, payments, clearing."""

_BALANCES = ("penalty", "overdue_interest", "overdue_principal")

_UPDATES: dict[frozenset[str], Update] = {}


def _update(columns: frozenset[str]) -> Update:
    """``UPDATE delinquencies SET <columns> WHERE id = :record_id``, built once per column set."""
    statement = _UPDATES.get(columns)
    if statement is None:
        statement = _UPDATES[columns] = (
            update(_RECORDS)
            .where(_RECORDS.c.id == bindparam("record_id"))
            .values({name: bindparam(f"new_{name}") for name in sorted(columns)})
        )
    return statement


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


@dataclass(frozen=True)
class Opening:
    """An open's rows, built from the report alone, before the write transaction.

    The borrower's rows are used only if the borrower is not stored (nor opened earlier in
    the chunk): building them costs two AES operations, looking first would cost a read.
    """

    key_values: dict[str, Any]
    key: bytes
    record: dict[str, Any]
    report: dict[str, Any]
    borrower_key: dict[str, Any]
    borrower: dict[str, Any]


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
    opening: Opening | None = None
    clearing: dict[str, Any] | None = None
    """A settlement's or withdrawal's report row, its receipt signed (see :func:`prepare`)."""


def prepare(intake: Intake, caller: Institution, item: Prepared, now: dt.datetime) -> None:
    """Fill in what applying ``item`` needs that depends on the report alone.

    CPU work (HMACs, a data key, AES), done before the write transaction: on SQLite it then
    runs while another writer holds the lock, instead of while every other writer waits.
    """
    report = item.report
    if report is None or item.account_index:
        return
    item.account_index = intake.account_index(caller, report.account_ref)
    if report.withdrawal is not None or (
        report.settlement is not None and intake.policy.clear_on_settlement
    ):
        # Accepted, it clears its record: its receipt has no log index, so it can be signed now.
        row = intake.report_row(caller, report, item.digest, now, None)
        row["receipt"] = intake.sign_row(caller.code, row, None)
        item.clearing = row
    state = report.state
    if state is None:
        return
    item.borrower_index = intake.borrower_index(state.borrower.national_id)
    if report.kind is not p.Kind.OPEN:
        return
    key_values, key, record = intake.record_rows(caller, report, state, item.account_index, now)
    row = intake.report_row(caller, report, item.digest, now, None)
    row["envelope_ct"] = intake.vault.seal(
        key, "reports", "envelope", f"{record['ref']}/{report.report_id}", item.raw
    )
    borrower_key, borrower = intake.borrower_rows(
        state.borrower.national_id, item.borrower_index, now
    )
    item.opening = Opening(key_values, key, record, row, borrower_key, borrower)


@dataclass
class _BorrowerRef:
    """A borrower the chunk refers to: stored (``id`` known) or to be inserted."""

    id: int | None
    values: dict[str, Any] | None = None
    key_values: dict[str, Any] | None = None


class _Row:
    """A record as the chunk sees it, over its row's values: read where the account rules
    (``check_transition``), payments (``lifecycle.apply_payment``) and clearing (``Clearable``)
    look, and changed in memory by the chunk's reports."""

    values: dict[str, Any]

    @property
    def id(self) -> int:
        row_id: int = self.values["id"]
        return row_id

    @property
    def institution_id(self) -> int:
        value: int = self.values["institution_id"]
        return value

    @property
    def borrower_id(self) -> int:
        value: int = self.values["borrower_id"]
        return value

    @property
    def data_key_id(self) -> int:
        value: int = self.values["data_key_id"]
        return value

    @property
    def account_index(self) -> bytes:
        value: bytes = self.values["account_index"]
        return value

    @property
    def ref(self) -> str:
        value: str = self.values["ref"]
        return value

    @property
    def sequence(self) -> int:
        value: int = self.values["sequence"]
        return value

    @property
    def status(self) -> str:
        value: str = self.values["status"]
        return value

    @property
    def product(self) -> str:
        value: str = self.values["product"]
        return value

    @property
    def first_delinquency_date(self) -> dt.date:
        value: dt.date = self.values["first_delinquency_date"]
        return value

    @property
    def settled_on(self) -> dt.date | None:
        value: dt.date | None = self.values["settled_on"]
        return value

    @property
    def penalty(self) -> Decimal:
        value: Decimal = self.values["penalty"]
        return value

    @penalty.setter
    def penalty(self, value: Decimal) -> None:
        self.values["penalty"] = value

    @property
    def overdue_interest(self) -> Decimal:
        value: Decimal = self.values["overdue_interest"]
        return value

    @overdue_interest.setter
    def overdue_interest(self, value: Decimal) -> None:
        self.values["overdue_interest"] = value

    @property
    def overdue_principal(self) -> Decimal:
        value: Decimal = self.values["overdue_principal"]
        return value

    @overdue_principal.setter
    def overdue_principal(self, value: Decimal) -> None:
        self.values["overdue_principal"] = value


class _NewRecord(_Row):
    """A record opened in this chunk and not written yet: its row, inserted at the flush."""

    def __init__(
        self,
        values: dict[str, Any],
        key_values: dict[str, Any],
        key: bytes,
        borrower: _BorrowerRef,
        borrower_index: bytes,
    ) -> None:
        self.values = values
        self.key_values = key_values
        self.key = key
        self.borrower = borrower
        self.borrower_index = borrower_index


class _StoredRecord(_Row):
    """A stored record, read as plain columns (no ORM object: loading and flushing those cost
    more than the statements); what the chunk changes is written by one UPDATE per column set."""

    def __init__(self, row: Any) -> None:
        self.values = {name: row._mapping[name] for name in _STORED_COLUMNS}
        self.borrower_index: bytes = row.borrower_index
        self.wrapped_key: tuple[str, int, bytes] = (row.key_ref, row.key_version, row.key_wrapped)
        self.changes: dict[str, Any] = {}


_Record = _StoredRecord | _NewRecord


@dataclass
class _NewReport:
    """A report row to insert; its receipt is signed once its id (the log index) is known.

    ``key`` is None for a report that cleared its record: no envelope, no log index.
    """

    position: int
    item: Prepared
    values: dict[str, Any]
    record: _Record | None = None
    key: bytes | None = None


@dataclass
class _Clear:
    record: _Record
    reason: ClearReason
    account_ref: str


@dataclass
class _Pending:
    records: list[_NewRecord] = field(default_factory=list)
    changed: dict[int, _StoredRecord] = field(default_factory=dict)
    reports: list[_NewReport] = field(default_factory=list)
    clears: list[_Clear] = field(default_factory=list)
    accounts: set[bytes] = field(default_factory=set)
    cleared_accounts: set[bytes] = field(default_factory=set)
    report_ids: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.records or self.changed or self.reports or self.clears)


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
        self._policy = intake.policy
        self._clearer = intake.clearer
        self._session = session
        self._caller = caller
        self._now = now
        self._slow_path = slow_path
        self._pending = _Pending()
        self._outcomes: dict[int, Outcome] = {}
        self._receipts: dict[str, tuple[str, bytes] | None] = {}
        self._records: dict[bytes, _Record | None] = {}
        self._cleared: dict[bytes, int | None] = {}
        self._borrowers: dict[bytes, _BorrowerRef | None] = {}
        self._watched: dict[bytes, bool] = {}
        self._keys: dict[int, bytes] = {}

    # --- the chunk ---------------------------------------------------------------------

    def apply(self, items: Sequence[Prepared | Refused]) -> list[Outcome]:
        prepared = [i for i in items if isinstance(i, Prepared)]
        for item in prepared:
            prepare(self._intake, self._caller, item, self._now)  # done already, as a rule
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
        report = item.report
        if item.report_id in pending.report_ids or (
            report is not None
            and report.kind is p.Kind.OPEN
            and item.account_index in pending.cleared_accounts
        ):
            # The stored state must be seen first: an earlier report's receipt, or the
            # record's deletion before the account's new record is inserted (a unique key).
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
        if item.error is not None or report is None:
            assert item.error is not None
            record_cap_violations(self._session, self._caller, item.error, self._now)
            self._outcomes[position] = Refused(item.error)
            return
        current = self._record(item.account_index)
        borrower_index = item.borrower_index
        if borrower_index is None and current is not None:
            borrower_index = current.borrower_index
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
        # NOTE: self._pending, not ``pending``: a flush above began a new one.
        self._pending.accounts.add(item.account_index)
        self._pending.report_ids.add(item.report_id)

    # --- look-ups (once per chunk, again only for what a flush changed) -----------------

    def _prefetch(self, items: list[Prepared]) -> None:
        ids = {i.report_id for i in items}
        for report_id in ids:
            self._receipts[report_id] = None
        if ids:
            for report_id, digest, receipt in self._look_up("receipts", report_ids=list(ids)):
                self._receipts[report_id] = (digest, receipt)
        accounts = {i.account_index for i in items if i.report is not None}
        if accounts:
            self._load_records(accounts)
        indexes = {i.borrower_index for i in items if i.borrower_index is not None}
        indexes |= {r.borrower_index for r in self._records.values() if r is not None}
        wanted = indexes - set(self._borrowers)
        if wanted:
            for borrower_id, index in self._look_up("borrowers", indexes=list(wanted)):
                self._borrowers[index] = _BorrowerRef(borrower_id)
            for index in wanted:
                self._borrowers.setdefault(index, None)
        self._load_watched(indexes)

    def _look_up(self, name: str, **lists: list[Any]) -> Any:
        connection = self._session.connection()
        statement = _statement(connection.dialect.name, name)
        return connection.execute(statement, {"institution_id": self._caller.id, **lists})

    def _load_records(self, accounts: set[bytes]) -> None:
        for account in accounts:
            self._records[account] = None
        for row in self._look_up("records", accounts=list(accounts)):
            self._records[row.account_index] = _StoredRecord(row)
        missing = [a for a in accounts if self._records[a] is None]
        for account in missing:
            self._cleared[account] = None
        if missing:
            for found, last in self._look_up("tombstones", accounts=missing):
                self._cleared[found] = last

    def _load_watched(self, indexes: set[bytes]) -> None:
        wanted = indexes - set(self._watched)
        if not wanted:
            return
        for index in wanted:
            self._watched[index] = False
        for (index,) in self._look_up("watched", indexes=list(wanted)):
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

    def _record(self, account: bytes) -> _Record | None:
        if account not in self._records:
            self._load_records({account})
        return self._records[account]

    def _cleared_at(self, account: bytes) -> int | None:
        if account not in self._cleared:
            self._load_records({account})
        return self._cleared[account]

    def _borrower(self, index: bytes) -> _BorrowerRef | None:
        if index not in self._borrowers:
            self._borrowers[index] = None
            for borrower_id, _ in self._look_up("borrowers", indexes=[index]):
                self._borrowers[index] = _BorrowerRef(borrower_id)
        return self._borrowers[index]

    def _is_watched(self, index: bytes) -> bool:
        self._load_watched({index})
        return self._watched[index]

    def _key(self, record: _Record) -> bytes:
        """The record's data key, unwrapped once per chunk."""
        if isinstance(record, _NewRecord):
            return record.key
        key = self._keys.get(record.data_key_id)
        if key is None:
            ref, version, wrapped = record.wrapped_key
            key = self._vault.open_key(DataKey(ref=ref, master_version=version, wrapped=wrapped))
            self._keys[record.data_key_id] = key
        return key

    # --- planning (in memory; nothing is written until the flush) -----------------------

    def _plan_open(self, position: int, item: Prepared) -> None:
        report, opening = item.report, item.opening
        assert report is not None and opening is not None and item.borrower_index is not None
        borrower = self._borrower(item.borrower_index)
        if borrower is None:
            borrower = _BorrowerRef(None, values=opening.borrower, key_values=opening.borrower_key)
            self._borrowers[item.borrower_index] = borrower
        record = _NewRecord(
            opening.record, opening.key_values, opening.key, borrower, item.borrower_index
        )
        self._pending.records.append(record)
        self._records[item.account_index] = record
        self._add_report(position, item, opening.report, record=record, key=opening.key)

    def _plan_change(self, position: int, item: Prepared, current: _Record) -> None:
        """An update, payment, settlement or withdrawal of a record, stored or new in the chunk.

        Every check that can refuse the report runs before the record is touched.
        """
        report = item.report
        assert report is not None
        if report.state is not None:
            assert item.borrower_index is not None
            check_same_borrower(current.borrower_index, item.borrower_index)
        changes: dict[str, Any] = {"sequence": report.sequence, "updated_at": self._now}
        paid_off = False
        if report.payment is not None:
            # NOTE: apply_payment reads and writes the three balances only, which the chunk's
            # records have as properties over their rows.
            paid_off = lifecycle.apply_payment(cast(Delinquency, current), report.payment.amount)
            changes |= {name: current.values[name] for name in _BALANCES}
        if report.state is not None:
            changes |= self._intake.state_columns(current.ref, report.state, self._key(current))
        settlement: tuple[p.SettlementType, dt.date] | None = None
        if report.payment is not None and paid_off:
            settlement = (p.SettlementType.PAID_IN_FULL, report.payment.date)
        elif report.settlement is not None:
            settlement = (report.settlement.type, report.settlement.date)
        if settlement is not None:
            changes |= {
                "status": "settled",
                "settled_on": settlement[1],
                "settlement_type": settlement[0].value,
            }
        current.values |= changes
        if isinstance(current, _StoredRecord):
            current.changes |= changes
            self._pending.changed[current.id] = current
        row = item.clearing or self._intake.report_row(
            self._caller, report, item.digest, self._now, None
        )
        if settlement is not None and self._policy.clear_on_settlement:
            self._clear(position, item, current, ClearReason.SETTLED, row)
        elif report.withdrawal is not None:
            reason = (
                ClearReason.FRAUD
                if report.withdrawal.reason is p.WithdrawalReason.FRAUD
                else ClearReason.REPORTED_IN_ERROR
            )
            self._clear(position, item, current, reason, row)
        else:
            key = self._key(current)
            row["envelope_ct"] = self._vault.seal(
                key, "reports", "envelope", f"{current.ref}/{report.report_id}", item.raw
            )
            self._add_report(position, item, row, record=current, key=key)

    def _clear(
        self,
        position: int,
        item: Prepared,
        record: _Record,
        reason: ClearReason,
        row: dict[str, Any],
    ) -> None:
        """Clear ``record`` with the report: the account has no record from here on."""
        assert item.report is not None
        pending = self._pending
        pending.clears.append(_Clear(record, reason, item.report.account_ref))
        pending.cleared_accounts.add(item.account_index)
        self._records[item.account_index] = None
        self._cleared[item.account_index] = record.sequence
        self._add_report(position, item, row)

    def _add_report(
        self,
        position: int,
        item: Prepared,
        values: dict[str, Any],
        *,
        record: _Record | None = None,
        key: bytes | None = None,
    ) -> None:
        self._pending.reports.append(_NewReport(position, item, values, record, key))

    # --- writing -------------------------------------------------------------------------

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            pending.accounts.clear()
            pending.cleared_accounts.clear()
            pending.report_ids.clear()
            return
        session = self._session
        connection = session.connection()
        new_borrowers = list(
            {id(r.borrower): r.borrower for r in pending.records if r.borrower.id is None}.values()
        )
        key_rows = [b.key_values or {} for b in new_borrowers]
        key_rows += [r.key_values for r in pending.records]
        key_ids, borrower_ids, record_ids, report_ids = bulk.next_ids(
            connection,
            [
                (_DATA_KEYS, len(key_rows)),
                (_BORROWERS, len(new_borrowers)),
                (_RECORDS, len(pending.records)),
                (_REPORTS, len(pending.reports)),
            ],
        )
        for key_row, key_id in zip(key_rows, key_ids, strict=True):
            key_row["id"] = key_id
        borrower_rows = [b.values or {} for b in new_borrowers]
        for borrower, values, borrower_id, key_id in zip(
            new_borrowers, borrower_rows, borrower_ids, key_ids, strict=False
        ):
            borrower.id = values["id"] = borrower_id
            values["data_key_id"] = key_id
        for record, record_id, key_id in zip(
            pending.records, record_ids, key_ids[len(new_borrowers) :], strict=True
        ):
            record.values |= {
                "id": record_id,
                "data_key_id": key_id,
                "borrower_id": record.borrower.id,
            }
        code = self._caller.code
        for report, report_id in zip(pending.reports, report_ids, strict=True):
            values = report.values
            values["id"] = report_id
            if report.key is not None:
                assert report.record is not None
                values["delinquency_id"] = report.record.id
            if not values["receipt"]:  # a clearing report's may be signed already
                values["receipt"] = self._intake.sign_row(
                    code, values, report_id if report.key is not None else None
                )
        bulk.write_rows(connection, _DATA_KEYS, key_rows)
        bulk.write_rows(connection, _BORROWERS, borrower_rows)
        bulk.write_rows(connection, _RECORDS, [r.values for r in pending.records])
        bulk.write_rows(connection, _REPORTS, [r.values for r in pending.reports])
        by_columns: dict[frozenset[str], list[dict[str, Any]]] = {}
        for stored in pending.changed.values():
            by_columns.setdefault(frozenset(stored.changes), []).append(
                {"record_id": stored.id} | {f"new_{k}": v for k, v in stored.changes.items()}
            )
        for columns, params in by_columns.items():
            connection.execute(_update(columns), params)
        session.flush()  # counted refusals
        # Reports of a record cleared here go with it (as when sent one by one), so they were
        # written above, where the clearing finds and deletes them.
        for reason in ClearReason:
            clears = [c for c in pending.clears if c.reason is reason]
            self._clearer.clear_many(
                session,
                [c.record for c in clears],
                reason,
                self._now,
                account_refs={c.record.id: c.account_ref for c in clears},
            )
        cleared = {c.record.id for c in pending.clears}
        for report in pending.reports:
            values = report.values
            receipt = values["receipt"]
            if values["delinquency_id"] in cleared:
                self._receipts.pop(values["report_id"], None)
            else:
                self._receipts[values["report_id"]] = (report.item.digest, receipt)
            self._outcomes[report.position] = Accepted(report.item.report_id, receipt, created=True)
        # What the flush changed is read again from the database when next needed.
        for account in pending.accounts:
            self._records.pop(account, None)
            self._cleared.pop(account, None)
        for clear in pending.clears:
            self._borrowers.pop(clear.record.borrower_index, None)
            # NOTE: on SQLite a deleted row's id may be given again (the next after the
            # largest): a key remembered by id would then seal under the wrong key.
            self._keys.pop(clear.record.data_key_id, None)
        self._pending = _Pending()

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
        self._keys.clear()
        self._receipts.pop(item.report_id, None)
