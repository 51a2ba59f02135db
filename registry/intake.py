"""Report intake: verify -> validate -> apply -> receipt, all or nothing.

Order matters. The envelope signature is checked over the exact bytes received before anything
is parsed; the idempotency look-up comes before full validation (a resent envelope gets its
original receipt even if the policy changed since); nothing is written until every check passed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import CTE, Connection, Insert, Table, bindparam, func, insert, null, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from crypto import dsse, strictjson
from crypto.errors import MalformedEnvelope, SignatureInvalid, StrictJSONError
from registry import alerts, authn, bulk, disputes, lifecycle, receipts
from registry import payload as p
from registry.clearing import Clearer, ClearReason
from registry.db import statements_commit_alone
from registry.errors import (
    Conflict,
    FieldError,
    Forbidden,
    MalformedReport,
    PolicyViolation,
    RegistryError,
    ValidationFailed,
)
from registry.models import (
    Borrower,
    ComplianceViolation,
    DataKey,
    Delinquency,
    Institution,
    MemberKey,
    Report,
    Tombstone,
)
from registry.policy import INTEREST_CAP, PENALTY_CAP, Policy
from registry.prepared import Prepared
from registry.secrets import KeyMaterial
from registry.vault import Vault

MAX_ATTEMPTS = 3

# NOTE: the single-report path's statements are built once. Building a select costs about as
# much as running it (a few hundred microseconds of Python each on a small server), and a
# report runs about a dozen; the compiled form is cached by SQLAlchemy either way.
_KEYS = select(MemberKey).where(MemberKey.keyid.in_(bindparam("keyids", expanding=True)))
_REPORT = select(Report.envelope_sha256, Report.receipt).where(
    Report.institution_id == bindparam("institution_id"),
    Report.report_id == bindparam("report_id"),
)
_RECORD_FOR_UPDATE = (
    select(Delinquency)
    .where(
        Delinquency.institution_id == bindparam("institution_id"),
        Delinquency.account_index == bindparam("account_index"),
    )
    .with_for_update()
)
_LAST_CLEARED = select(func.max(Tombstone.last_sequence)).where(
    Tombstone.institution_id == bindparam("institution_id"),
    Tombstone.account_index == bindparam("account_index"),
)
_BORROWER = select(Borrower).where(Borrower.id_index == bindparam("id_index"))
_REPORTS = cast(Table, Report.__table__)
_DATA_KEYS = cast(Table, DataKey.__table__)
_BORROWERS = cast(Table, Borrower.__table__)
_RECORDS = cast(Table, Delinquency.__table__)
_OPEN_TABLES = (_DATA_KEYS, _BORROWERS, _RECORDS, _REPORTS)
_OPEN_IDS = (2, 1, 1, 1)
"""Ids an open takes: a data key each for a new borrower and the record (an existing borrower
leaves one key id and the borrower id unused: a gap in a sequence, nothing more)."""
_OPEN_LOOKUPS: dict[str, Prepared] = {}


def _open_lookup(dialect: str) -> Prepared:
    """Everything opening an account reads, in one round trip: the report id's earlier
    acceptance, the account's record (no lock: an open only writes if there is none, and the
    unique key settles a race), the borrower's id if stored, whether another member watches
    them, the account's last cleared sequence, and the new rows' ids (registry.bulk)."""
    statement = _OPEN_LOOKUPS.get(dialect)
    if statement is None:
        own_report = (
            Report.institution_id == bindparam("institution_id"),
            Report.report_id == bindparam("report_id"),
        )
        own_record = (
            Delinquency.institution_id == bindparam("institution_id"),
            Delinquency.account_index == bindparam("account_index"),
        )
        statement = _OPEN_LOOKUPS[dialect] = Prepared(
            select(
                select(Report.envelope_sha256).where(*own_report).scalar_subquery(),
                select(Report.receipt).where(*own_report).scalar_subquery(),
                select(Delinquency.sequence).where(*own_record).scalar_subquery(),
                select(Delinquency.status).where(*own_record).scalar_subquery(),
                select(Delinquency.first_delinquency_date).where(*own_record).scalar_subquery(),
                select(Borrower.id)
                .where(Borrower.id_index == bindparam("borrower_index"))
                .scalar_subquery(),
                alerts.someone_else_watches(
                    bindparam("borrower_index"), bindparam("institution_id")
                ),
                _LAST_CLEARED.scalar_subquery(),
                *bulk.id_columns(dialect, _OPEN_TABLES, fixed=_OPEN_IDS),
            )
        )
    return statement


_Shape = tuple[tuple[str, str, tuple[tuple[str, str | None], ...]], ...]
_OPEN_WRITES: dict[tuple[_Shape, bool], Prepared] = {}
Guard = tuple[Insert, dict[str, Any]]
"""An INSERT with RETURNING and its parameters: rows written with it are written only if it
wrote its own row (:func:`registry.authn.member_nonce_guard`)."""


def _writes_in_one_statement(
    parts: Sequence[tuple[str, Table, dict[str, Any]]],
    guard: Guard | None = None,
    same: Mapping[tuple[str, str], tuple[str, str]] | None = None,
) -> tuple[Prepared, dict[str, Any]]:
    """PostgreSQL: several rows of several tables in one INSERT (the others as data-modifying
    CTEs), so an open is one round trip instead of four. Each part is (name, table, row);
    a name prefixes its row's parameters. Foreign keys among the rows hold: PostgreSQL checks
    them at the end of the statement, when every row is in. With a ``guard``, every row is
    selected from the guard's RETURNING: written only if the guard wrote its row.

    NOTE: psycopg converts (and can prepare) a statement once only when it has at most 50
    parameters; above that it parses the SQL text again at every execution. So a None is
    written as NULL; a (part, column) in ``same`` takes the parameter of the (part, column)
    it names, which holds the same value by construction (a new row's id as another row's
    reference); and one timestamp object given to several columns (the request's time) is
    one parameter (every timestamp column has the same type). What is shared follows from
    the code, never from the data: the statement's text is the same for every open of one
    shape, so that psycopg and PostgreSQL prepare it once.
    """
    values: dict[str, Any] = {}
    shared: dict[int, str] = {}
    links = same or {}
    shape: list[tuple[str, str, tuple[tuple[str, str | None], ...]]] = []
    for name, table, row in parts:
        columns: list[tuple[str, str | None]] = []
        for column, value in row.items():
            param: str | None = None
            if (name, column) in links:
                param = "_".join(links[name, column])
                if values.get(param) != value:
                    raise ValueError(f"{name}.{column} is not the value of the {param} it names")
            elif value is not None:
                param = f"{name}_{column}"
                if isinstance(value, dt.datetime):
                    param = shared.setdefault(id(value), param)
                values[param] = value
            columns.append((column, param))
        shape.append((name, table.name, tuple(columns)))
    if guard is not None:
        values.update(guard[1])
    key = (tuple(shape), guard is not None)
    statement = _OPEN_WRITES.get(key)
    if statement is None:
        source = None if guard is None else guard[0].cte("guard")
        built = [
            _row_insert(table, cols, source)
            for (_, table, _), (_, _, cols) in zip(parts, shape, strict=True)
        ]
        *ctes, last = built
        named = [cte.cte(name) for cte, (name, _, _) in zip(ctes, shape, strict=False)]
        if source is not None:
            named.insert(0, source)
        statement = _OPEN_WRITES[key] = Prepared(last.add_cte(*named))
    return statement, values


def _row_insert(
    table: Table, columns: tuple[tuple[str, str | None], ...], source: CTE | None
) -> Insert:
    """One row's INSERT: its VALUES, or selected once from each row of ``source``."""
    if source is None:
        return insert(table).values(
            {column: null() if param is None else bindparam(param) for column, param in columns}
        )
    return insert(table).from_select(
        [column for column, _ in columns],
        select(
            *(
                null() if param is None else bindparam(param, type_=table.c[column].type)
                for column, param in columns
            )
        ).select_from(source),
    )


_SET_RECEIPT = (
    update(_REPORTS)
    .where(_REPORTS.c.id == bindparam("row_id"))
    .values(receipt=bindparam("signed_receipt"))
)


@dataclass(frozen=True)
class Checked:
    """A report whose envelope verified, with what applying it needs.

    ``error`` is a validation refusal, given only if the report id is new: a resend gets its
    receipt even if the payload would not pass today's checks.
    """

    report_id: str
    digest: str
    report: p.ReportPayload | None
    error: RegistryError | None
    opening: Opening | None = None
    """An open's rows, made with the checks (see :class:`Opening`)."""


@dataclass(frozen=True)
class Opening:
    """What opening an account writes, built before the write transaction: blind indexes, new
    data keys, sealed fields and the stored envelope. On SQLite this is CPU work the one write
    lock need not wait for. The borrower's rows are used only if the borrower is new."""

    account_index: bytes
    borrower_index: bytes
    borrower_key: dict[str, Any]
    borrower: dict[str, Any]
    record_key: dict[str, Any]
    record: dict[str, Any]
    envelope_ct: bytes


@dataclass(frozen=True)
class _Earlier:
    envelope_sha256: str
    receipt: bytes


@dataclass(frozen=True)
class _Found:
    """What the look-up of an open found (:func:`_open_lookup`)."""

    earlier: _Earlier | None
    current: _Current | None
    borrower_id: int | None
    watched: bool
    cleared_at: int | None
    ids: list[Any]


@dataclass(frozen=True)
class _OpenRows:
    """An open's rows in the order they are written: (name, table, row) each."""

    parts: list[tuple[str, Table, dict[str, Any]]]
    same: dict[tuple[str, str], tuple[str, str]]
    """Columns whose value is another row's, by construction (see _writes_in_one_statement)."""
    receipt: bytes


_SAME_IN_EVERY_OPEN = {
    ("report", "delinquency_id"): ("record", "id"),
    ("report", "institution_id"): ("record", "institution_id"),
    ("report", "sequence"): ("record", "sequence"),
}
_SAME_FOR_A_NEW_BORROWER = {
    ("key1", "master_version"): ("key0", "master_version"),
    ("borrower", "data_key_id"): ("key0", "id"),
    ("record", "borrower_id"): ("borrower", "id"),
}


@dataclass(frozen=True)
class _Current:
    """What an open needs to know of the account's record, when it has one."""

    sequence: int
    status: str
    first_delinquency_date: dt.date


def _resent(earlier: _Earlier | None, report_id: str, digest: str) -> IntakeResult | None:
    """The earlier receipt when these very bytes were accepted before; None for a new report
    id; ``Conflict`` for a report id accepted before with other bytes."""
    if earlier is None:
        return None
    if earlier.envelope_sha256 == digest:
        return IntakeResult(report_id, earlier.receipt, created=False)
    raise Conflict(
        "this report id was already accepted with different bytes; a report id is never reused",
        code="report_id_conflict",
        extra={"report_id": report_id},
    )


@dataclass(frozen=True)
class IntakeResult:
    report_id: str
    receipt: bytes
    created: bool


class Intake:
    """Accepts one signed report from an authenticated member."""

    def __init__(self, material: KeyMaterial, policy: Policy) -> None:
        self._material = material
        self._policy = policy
        self._vault = Vault(material.keyring)
        self._clearer = Clearer(material, policy)

    # What batch intake (registry.batch_apply) shares with the single-report path.
    @property
    def material(self) -> KeyMaterial:
        return self._material

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def vault(self) -> Vault:
        return self._vault

    @property
    def clearer(self) -> Clearer:
        return self._clearer

    def submit(
        self,
        session: Session,
        caller: Institution,
        raw: bytes,
        now: dt.datetime,
        *,
        known_keys: Sequence[MemberKey] = (),
        checked: Checked | None = None,
    ) -> IntakeResult:
        """Accept ``raw`` (a DSSE envelope) and commit, or raise and leave nothing behind.

        A request nonce authentication left to write (``registry.authn``) is written here, by
        the report's first write; on PostgreSQL a plain open writes it with the report's rows.

        ``known_keys`` are keys already read in this transaction (the key that signed the
        request): an envelope signed by one of them needs no look-up of its own. ``checked``
        is what :meth:`check` made of ``raw``, when the caller checked it before writing.

        A unique-key race with a concurrent submission of the same report or account is
        retried from the start, where it resolves into a receipt or a clear conflict.
        """
        for attempt in range(MAX_ATTEMPTS):
            try:
                result = self._submit(session, caller, raw, now, known_keys, checked)
                session.commit()
                return result
            except IntegrityError:
                session.rollback()
                if attempt == MAX_ATTEMPTS - 1:
                    raise
            except Conflict as exc:
                session.rollback()
                # NOTE: a concurrent copy of the same envelope may have committed between our
                # idempotency look-up and the record's lock; it is a resend, not a conflict.
                if exc.code != "report_id_conflict":
                    earlier = self._accepted_before(session, caller, raw)
                    session.rollback()
                    if earlier is not None:
                        return earlier
                raise
            except RegistryError as exc:
                session.rollback()
                if record_cap_violations(session, caller, exc, now):
                    session.commit()
                raise
            except BaseException:
                session.rollback()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _submit(
        self,
        session: Session,
        caller: Institution,
        raw: bytes,
        now: dt.datetime,
        known_keys: Sequence[MemberKey] = (),
        checked: Checked | None = None,
    ) -> IntakeResult:
        if checked is None:
            checked = self.check(lambda: session, caller, raw, now, known_keys=known_keys)
        report_id, digest = checked.report_id, checked.digest
        report = checked.report
        if report is not None and report.kind is p.Kind.OPEN:
            opening = checked.opening or self._opening(caller, report, raw, now)
            opened = self._open_unwatched(session, caller, report, opening, digest, now)
            if opened is not None:
                return opened
        authn.write_nonce(session)
        resent = _resent(self._report(session, caller, report_id), report_id, digest)
        if resent is not None:
            return resent
        if checked.error is not None:
            raise checked.error
        assert report is not None
        before = alerts.capture(session, self._material, caller, report)
        delinquency, key = self._apply(session, caller, report, now)
        alerts.on_report(session, caller, report.kind, before, delinquency, now)
        return self._record(session, caller, delinquency, key, report, raw, digest, now)

    @staticmethod
    def _report(session: Session, caller: Institution, report_id: str) -> _Earlier | None:
        """The envelope digest and receipt of the caller's report ``report_id``, if accepted."""
        row = session.execute(
            _REPORT, {"institution_id": caller.id, "report_id": report_id}
        ).first()
        return None if row is None else _Earlier(row[0], row[1])

    def _accepted_before(
        self, session: Session, caller: Institution, raw: bytes
    ) -> IntakeResult | None:
        """The receipt of these exact bytes if they were accepted (the envelope was verified)."""
        report_id = p.peek_report_id(decode_payload(dsse.parse_envelope(raw).payload))
        existing = self._report(session, caller, report_id)
        if existing is None or existing.envelope_sha256 != hashlib.sha256(raw).hexdigest():
            return None
        return IntakeResult(report_id, existing.receipt, created=False)

    def check(
        self,
        session: Callable[[], Session],
        caller: Institution,
        raw: bytes,
        now: dt.datetime,
        *,
        known_keys: Sequence[MemberKey] = (),
    ) -> Checked:
        """Verify and validate ``raw`` without writing: CPU work, before any write lock.

        ``session`` is called only if the envelope names a key not in ``known_keys``.
        Raises the refusal of an envelope that does not verify.
        """
        envelope = self._verify(session, caller, raw, now, known_keys)
        document = decode_payload(envelope.payload)
        report_id = p.peek_report_id(document)
        digest = hashlib.sha256(raw).hexdigest()
        try:
            report = self.parse_payload(caller, document, now)
        except RegistryError as exc:
            return Checked(report_id, digest, None, exc)
        opening = None
        if report.kind is p.Kind.OPEN:
            opening = self._opening(caller, report, raw, now)
        return Checked(report_id, digest, report, None, opening)

    def _opening(
        self, caller: Institution, report: p.ReportPayload, raw: bytes, now: dt.datetime
    ) -> Opening:
        state = report.state
        assert state is not None
        account_index = self.account_index(caller, report.account_ref)
        borrower_index = self.borrower_index(state.borrower.national_id)
        borrower_key, borrower = self.borrower_rows(state.borrower.national_id, borrower_index, now)
        record_key, key, record = self.record_rows(caller, report, state, account_index, now)
        envelope_ct = self._vault.seal(
            key, "reports", "envelope", f"{record['ref']}/{report.report_id}", raw
        )
        return Opening(
            account_index, borrower_index, borrower_key, borrower, record_key, record, envelope_ct
        )

    def _verify(
        self,
        session: Callable[[], Session],
        caller: Institution,
        raw: bytes,
        now: dt.datetime,
        known_keys: Sequence[MemberKey] = (),
    ) -> dsse.Envelope:
        envelope = parse_envelope(raw)
        keyids = {s.keyid for s in envelope.signatures}
        keys = [k for k in known_keys if k.keyid in keyids]
        if len(keys) < len(keyids):
            keys = list(session().scalars(_KEYS, {"keyids": sorted(keyids)}))
        return check_signature(envelope, keys, caller, now)

    def parse_payload(
        self, caller: Institution, document: Any, now: dt.datetime
    ) -> p.ReportPayload:
        """Full validation of a decoded payload, its institution and the charging caps."""
        report = p.parse_report(document, policy=self._policy, today=now.date())
        if report.institution != caller.code:
            raise Forbidden(
                "the payload's institution is not the calling member",
                code="institution_mismatch",
                errors=[FieldError("institution", "is_caller", "must be the calling member")],
            )
        if report.state is not None:
            self._check_caps(report.state)
        return report

    def _check_caps(self, report: p.AccountState) -> None:
        errors = []
        penalty_limit = self._policy.penalty_limit(report.overdue_principal)
        if report.penalty > penalty_limit:
            errors.append(
                FieldError(
                    "penalty", PENALTY_CAP.code, self._policy.describe(PENALTY_CAP, penalty_limit)
                )
            )
        interest_limit = self._policy.interest_limit(report.overdue_principal, report.days_past_due)
        if report.overdue_interest > interest_limit:
            errors.append(
                FieldError(
                    "overdue_interest",
                    INTEREST_CAP.code,
                    self._policy.describe(INTEREST_CAP, interest_limit),
                )
            )
        if not errors:
            return
        # NOTE: the refusal is counted for the operator (no report data, just the rule) by
        # ``record_cap_violations`` once this report's work is rolled back: committing here
        # would also commit the reports before it in a batch.
        raise PolicyViolation(
            "the report claims more than the charging caps allow",
            code="charging_cap_exceeded",
            errors=errors,
        )

    def _apply(
        self, session: Session, caller: Institution, report: p.ReportPayload, now: dt.datetime
    ) -> tuple[Delinquency | None, bytes | None]:
        """Apply the report to the account's record; returns the record and its data key.

        Returns ``(None, None)`` when the report cleared the record (it no longer exists).
        """
        account_index = self.account_index(caller, report.account_ref)
        current = session.scalar(
            _RECORD_FOR_UPDATE, {"institution_id": caller.id, "account_index": account_index}
        )
        cleared_at = None if current is not None else last_cleared(session, caller, account_index)
        check_transition(report, current, cleared_at)
        if report.kind is p.Kind.OPEN:
            assert report.state is not None
            return self._open(session, caller, report, report.state, account_index, now)
        assert current is not None
        key = self._vault.open_key(current.data_key)
        current.sequence = report.sequence
        current.updated_at = now
        if report.state is not None:
            self._check_same_borrower(current, report.state)
            self._write_state(current, report.state, key)
            disputes.on_member_report(session, self._material, current, report.kind.value, now)
        elif report.payment is not None:
            if lifecycle.apply_payment(current, report.payment.amount):
                return self._settle(
                    session,
                    current,
                    report,
                    p.SettlementType.PAID_IN_FULL,
                    report.payment.date,
                    key,
                    now,
                )
        elif report.settlement is not None:
            return self._settle(
                session, current, report, report.settlement.type, report.settlement.date, key, now
            )
        elif report.withdrawal is not None:
            reason = (
                ClearReason.FRAUD
                if report.withdrawal.reason is p.WithdrawalReason.FRAUD
                else ClearReason.REPORTED_IN_ERROR
            )
            self._clearer.clear(session, current, reason, now, account_ref=report.account_ref)
            return None, None
        return current, key

    def _settle(
        self,
        session: Session,
        record: Delinquency,
        report: p.ReportPayload,
        kind: p.SettlementType,
        on: dt.date,
        key: bytes,
        now: dt.datetime,
    ) -> tuple[Delinquency | None, bytes | None]:
        record.status = "settled"
        record.settled_on = on
        record.settlement_type = kind.value
        if self._policy.clear_on_settlement:
            # NOTE: same transaction as the settling report: there is no moment at which the
            # registry has acknowledged a settlement but still shows the debt.
            self._clearer.clear(
                session, record, ClearReason.SETTLED, now, account_ref=report.account_ref
            )
            return None, None
        return record, key

    def account_index(self, caller: Institution, account_ref: str) -> bytes:
        """The account's blind index: member code NUL account reference."""
        return self._material.blind_index.digest("account_ref", f"{caller.code}\x00{account_ref}")

    def borrower_index(self, national_id: str) -> bytes:
        return self._material.blind_index.digest("national_id", national_id)

    def _check_same_borrower(self, record: Delinquency, state: p.AccountState) -> None:
        check_same_borrower(
            record.borrower.id_index, self.borrower_index(state.borrower.national_id)
        )

    def state_columns(self, ref: str, state: p.AccountState, key: bytes) -> dict[str, Any]:
        """A record's columns written from a report's account state (personal ones sealed)."""
        seal, who = self._vault.seal, state.borrower
        return {
            "name_ct": seal(key, "delinquencies", "name", ref, who.name.encode()),
            "phone_ct": seal(key, "delinquencies", "phone", ref, who.phone.encode()),
            "address_ct": (
                seal(key, "delinquencies", "address", ref, who.address.encode())
                if who.address is not None
                else None
            ),
            "product": state.product.value,
            "currency": state.currency,
            "overdue_principal": state.overdue_principal,
            "overdue_interest": state.overdue_interest,
            "penalty": state.penalty,
            "days_past_due": state.days_past_due,
            "classification": self._policy.classify(state.product, state.days_past_due).value,
            "first_delinquency_date": state.first_delinquency_date,
            "as_of_date": state.as_of_date,
            "contact_status": state.contact.status.value,
            "lost_contact_since": state.contact.since,
            "channels_tried": ",".join(c.value for c in state.contact.channels_tried),
            "collection_stage": state.collection_stage.value,
        }

    def borrower_rows(
        self, national_id: str, id_index: bytes, now: dt.datetime
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new borrower's data key row and borrower row (without ``data_key_id``)."""
        key_values, key = self._vault.new_key_values(now)
        ref = secrets.token_hex(16)
        return key_values, {
            "ref": ref,
            "id_index": id_index,
            "national_id_ct": self._vault.seal(
                key, "borrowers", "national_id", ref, national_id.encode()
            ),
            "created_at": now,
        }

    def record_rows(
        self,
        caller: Institution,
        report: p.ReportPayload,
        state: p.AccountState,
        account_index: bytes,
        now: dt.datetime,
    ) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
        """A new record's data key row, the key, and the record's row (without
        ``data_key_id`` and ``borrower_id``), every column given."""
        key_values, key = self._vault.new_key_values(now)
        ref = secrets.token_hex(16)
        return (
            key_values,
            key,
            {
                "ref": ref,
                "institution_id": caller.id,
                "account_index": account_index,
                "account_ref_ct": self._vault.seal(
                    key, "delinquencies", "account_ref", ref, report.account_ref.encode()
                ),
                "sequence": report.sequence,
                "status": "open",
                "settled_on": None,
                "settlement_type": None,
                "suppressed_at": None,
                "opened_at": now,
                "updated_at": now,
                **self.state_columns(ref, state, key),
            },
        )

    @staticmethod
    def report_row(
        caller: Institution,
        report: p.ReportPayload,
        digest: str,
        now: dt.datetime,
        delinquency_id: int | None,
    ) -> dict[str, Any]:
        """A report's row, every column given; its envelope and receipt still empty."""
        return {
            "institution_id": caller.id,
            "report_id": report.report_id,
            "sequence": report.sequence,
            "kind": report.kind.value,
            "envelope_sha256": digest,
            "envelope_ct": b"",
            "receipt": b"",
            "accepted_at": now,
            "delinquency_id": delinquency_id,
        }

    def sign_row(self, institution: str, row: dict[str, Any], log_index: int | None) -> bytes:
        """The receipt of a report :meth:`report_row` built (None: it cleared its record)."""
        return receipts.sign_receipt(
            self._material,
            receipts.receipt_document(
                report_id=row["report_id"],
                institution=institution,
                envelope_sha256=row["envelope_sha256"],
                sequence=row["sequence"],
                kind=row["kind"],
                accepted_at=row["accepted_at"],
                log_index=log_index,
            ),
        )

    def _open_unwatched(
        self,
        session: Session,
        caller: Institution,
        report: p.ReportPayload,
        opening: Opening,
        digest: str,
        now: dt.datetime,
    ) -> IntakeResult | None:
        """Open an account for a borrower nobody else watches, with plain inserts.

        The same checks as every report; what differs is the writing: ids taken up front
        (registry.bulk), so the receipt is signed before its row is written, and no ORM
        objects (a new account raises no alert and answers no dispute). Returns None, having
        written nothing, when another member watches the borrower: the general path then
        raises their alerts. A resend gets its receipt here, as on the general path.

        The request's nonce is written first, unless :meth:`_open_at_once` wrote it with the
        report.
        """
        connection = session.connection()
        nonce = authn.pending_member_nonce(session)
        if nonce is not None:
            with statements_commit_alone(connection) as alone:
                opened = (
                    self._open_at_once(connection, caller, report, opening, digest, now, nonce)
                    if alone
                    else None
                )
            if opened is not None:
                authn.nonce_written_with(session, nonce)
                return opened
        authn.write_nonce(session)
        found = self._look_up_open(connection, caller, report, opening)
        resent = _resent(found.earlier, report.report_id, digest)
        if resent is not None:
            return resent
        check_transition(report, found.current, found.cleared_at)
        if found.watched:
            return None
        dialect = connection.dialect.name
        rows = self._open_rows(dialect, caller, report, opening, digest, now, found)
        if dialect == "postgresql":
            statement, values = _writes_in_one_statement(rows.parts, same=rows.same)
            statement.execute(connection, values)
            return IntakeResult(report.report_id, rows.receipt, created=True)
        by_table: dict[Table, list[dict[str, Any]]] = {}
        for _, table, row in rows.parts:
            by_table.setdefault(table, []).append(row)
        for table, written in by_table.items():
            bulk.write_rows(connection, table, written)
        return IntakeResult(report.report_id, rows.receipt, created=True)

    def _open_at_once(
        self,
        connection: Connection,
        caller: Institution,
        report: p.ReportPayload,
        opening: Opening,
        digest: str,
        now: dt.datetime,
        nonce: authn.ExpectedNonce,
    ) -> IntakeResult | None:
        """An open in two statements that each commit alone (:func:`statements_commit_alone`):
        the look-up, then every row with the request's nonce. Three round trips fewer than
        the nonce, look-up and writes in one transaction; nothing is lost by splitting them, as
        the look-up takes no lock either way (a unique key settles a race).

        Only a plain open does this: a new account, its borrower watched by no other member.
        Anything else (a resend, a refusal, a watched borrower, a race lost, a nonce not
        written because it is a replay or the key or member is no longer valid) returns None,
        having written nothing: the usual path then writes the nonce first and answers.
        """
        found = self._look_up_open(connection, caller, report, opening)
        if found.earlier is not None or found.watched:
            return None
        try:
            check_transition(report, found.current, found.cleared_at)
        except RegistryError:
            return None
        rows = self._open_rows("postgresql", caller, report, opening, digest, now, found)
        statement, values = _writes_in_one_statement(
            rows.parts, authn.member_nonce_guard(nonce), rows.same
        )
        try:
            written = statement.execute(connection, values).rowcount
        except IntegrityError:
            return None
        return IntakeResult(report.report_id, rows.receipt, created=True) if written == 1 else None

    def _look_up_open(
        self,
        connection: Connection,
        caller: Institution,
        report: p.ReportPayload,
        opening: Opening,
    ) -> _Found:
        (
            earlier_digest,
            earlier_receipt,
            sequence,
            status,
            first_delinquency_date,
            borrower_id,
            watched,
            cleared_at,
            *ids,
        ) = (
            _open_lookup(connection.dialect.name)
            .execute(
                connection,
                {
                    "report_id": report.report_id,
                    "borrower_index": opening.borrower_index,
                    "institution_id": caller.id,
                    "account_index": opening.account_index,
                },
            )
            .one()
        )
        return _Found(
            None if earlier_digest is None else _Earlier(earlier_digest, earlier_receipt),
            None if sequence is None else _Current(sequence, status, first_delinquency_date),
            borrower_id,
            bool(watched),
            cleared_at,
            ids,
        )

    def _open_rows(
        self,
        dialect: str,
        caller: Institution,
        report: p.ReportPayload,
        opening: Opening,
        digest: str,
        now: dt.datetime,
        found: _Found,
    ) -> _OpenRows:
        """The open's rows, numbered with the ids the look-up took, the receipt signed into
        the report's row."""
        new_borrower = found.borrower_id is None
        key_ids, new_borrower_ids, [record_id], [log_index] = bulk.ids_from(
            dialect, found.ids, _OPEN_IDS
        )
        key_ids = key_ids if new_borrower else key_ids[-1:]
        borrower_id = new_borrower_ids[0] if new_borrower else found.borrower_id
        parts: list[tuple[str, Table, dict[str, Any]]] = []
        same = dict(_SAME_IN_EVERY_OPEN)
        if new_borrower:
            parts.append(("key0", _DATA_KEYS, {**opening.borrower_key, "id": key_ids[0]}))
            same |= _SAME_FOR_A_NEW_BORROWER
        record_key = f"key{len(parts)}"
        parts.append((record_key, _DATA_KEYS, {**opening.record_key, "id": key_ids[-1]}))
        same["record", "data_key_id"] = (record_key, "id")
        if new_borrower:
            borrower = {**opening.borrower, "id": borrower_id, "data_key_id": key_ids[0]}
            parts.append(("borrower", _BORROWERS, borrower))
        record = {
            **opening.record,
            "id": record_id,
            "borrower_id": borrower_id,
            "data_key_id": key_ids[-1],
        }
        row = self.report_row(caller, report, digest, now, record_id)
        row["id"] = log_index
        row["envelope_ct"] = opening.envelope_ct
        row["receipt"] = receipt = self.sign_row(caller.code, row, log_index)
        parts += [("record", _RECORDS, record), ("report", _REPORTS, row)]
        return _OpenRows(parts, same, receipt)

    def _open(
        self,
        session: Session,
        caller: Institution,
        report: p.ReportPayload,
        state: p.AccountState,
        account_index: bytes,
        now: dt.datetime,
    ) -> tuple[Delinquency, bytes]:
        borrower = self._borrower(session, state.borrower.national_id, now)
        key_values, key, values = self.record_rows(caller, report, state, account_index, now)
        record = Delinquency(**values, borrower=borrower, data_key=DataKey(**key_values))
        session.add(record)
        return record, key

    def _write_state(self, record: Delinquency, state: p.AccountState, key: bytes) -> None:
        for column, value in self.state_columns(record.ref, state, key).items():
            setattr(record, column, value)

    def _borrower(self, session: Session, national_id: str, now: dt.datetime) -> Borrower:
        id_index = self._material.blind_index.digest("national_id", national_id)
        found = session.scalar(_BORROWER, {"id_index": id_index})
        if found is not None:
            return found
        key_values, values = self.borrower_rows(national_id, id_index, now)
        borrower = Borrower(**values, data_key=DataKey(**key_values))
        session.add(borrower)
        return borrower

    def _record(
        self,
        session: Session,
        caller: Institution,
        record: Delinquency | None,
        key: bytes | None,
        report: p.ReportPayload,
        raw: bytes,
        digest: str,
        now: dt.datetime,
    ) -> IntakeResult:
        """Keep the envelope as evidence beside its record and sign the receipt.

        A report that cleared its record keeps its receipt but not its envelope: keeping the
        envelope would keep personal data the clearing has just destroyed.
        """
        row = Report(
            institution_id=caller.id,
            report_id=report.report_id,
            sequence=report.sequence,
            kind=report.kind.value,
            envelope_sha256=digest,
            envelope_ct=b"",
            receipt=b"",
            accepted_at=now,
        )
        if record is None or key is None:
            # NOTE: no envelope and no record: only what makes a resend idempotent.
            row.receipt = receipts.sign_receipt(
                self._material,
                receipts.receipt_payload(
                    report=row, institution=caller, accepted_at=now, log_index=None
                ),
            )
            session.add(row)
            session.flush()
            return IntakeResult(report.report_id, row.receipt, created=True)
        row.delinquency = record
        row.envelope_ct = self._vault.seal(
            key, "reports", "envelope", f"{record.ref}/{report.report_id}", raw
        )
        session.add(row)
        session.flush()
        receipt = receipts.sign_receipt(
            self._material,
            receipts.receipt_payload(
                report=row, institution=caller, accepted_at=now, log_index=row.id
            ),
        )
        # One prebuilt UPDATE instead of a second unit of work for one column.
        session.execute(_SET_RECEIPT, {"row_id": row.id, "signed_receipt": receipt})
        set_committed_value(row, "receipt", receipt)
        return IntakeResult(report.report_id, receipt, created=True)

    def submit_in_batch(
        self, session: Session, caller: Institution, raw: bytes, now: dt.datetime
    ) -> IntakeResult:
        """One report of a batch, in its own SAVEPOINT: a refusal undoes this report only.

        The caller commits (the batch, in chunks). A unique-key race with a concurrent
        submission is retried from the start, as for a single report.
        """
        for attempt in range(MAX_ATTEMPTS):
            try:
                with session.begin_nested():
                    return self._submit(session, caller, raw, now)
            except IntegrityError:
                if attempt == MAX_ATTEMPTS - 1:
                    raise
            except RegistryError as exc:
                record_cap_violations(session, caller, exc, now)
                raise
        raise AssertionError("unreachable")  # pragma: no cover


def parse_envelope(raw: bytes) -> dsse.Envelope:
    """The DSSE envelope with the report payload type, or the refusal naming the rule."""
    try:
        envelope = dsse.parse_envelope(raw)
    except MalformedEnvelope as exc:
        raise MalformedReport(
            "the body is not a valid DSSE envelope",
            code="envelope_malformed",
            errors=[FieldError("envelope", "dsse_v1", str(exc))],
        ) from None
    if envelope.payload_type != p.PAYLOAD_TYPE:
        raise MalformedReport(
            f"payloadType must be {p.PAYLOAD_TYPE}",
            code="payload_type_unsupported",
            errors=[FieldError("payloadType", "supported_type", f"must be {p.PAYLOAD_TYPE}")],
        )
    return envelope


def check_signature(
    envelope: dsse.Envelope, keys: Sequence[MemberKey], caller: Institution, now: dt.datetime
) -> dsse.Envelope:
    """Verify ``envelope`` against the caller's valid keys among ``keys`` (those its keyids name).

    Another member's key is refused as such; the caller's expired or revoked key by its state.
    """
    own = [k for k in keys if k.institution_id == caller.id]
    if not own:
        if keys:
            raise Forbidden(
                "the envelope is signed by another member's key",
                code="envelope_signer_not_caller",
            )
        raise ValidationFailed(
            "no signature on the envelope is by a registered key",
            code="envelope_unknown_key",
            errors=[FieldError("signatures", "registered_key", "keyid must be registered")],
        )
    usable = {k.keyid: k.public_key for k in own if k.state_at(now) == "valid"}
    if not usable:
        state = own[0].state_at(now)
        raise ValidationFailed(
            f"the envelope's signing key is {state.replace('_', ' ')}",
            code=f"envelope_key_{state}",
            errors=[FieldError("signatures", "key_valid", f"signing key is {state}")],
        )
    try:
        dsse.verify_envelope(envelope, usable)
    except SignatureInvalid:
        raise ValidationFailed(
            "the envelope signature does not verify over the payload",
            code="envelope_signature_invalid",
            errors=[FieldError("signatures", "ed25519_pae", "signature does not verify")],
        ) from None
    return envelope


def last_cleared(session: Session, caller: Institution, account_index: bytes) -> int | None:
    """The last sequence of the account's cleared records, or None if it was never cleared."""
    return session.scalar(
        _LAST_CLEARED, {"institution_id": caller.id, "account_index": account_index}
    )


class AccountRecord(Protocol):
    """What the account rules read of a record (a ``Delinquency``, or just those columns)."""

    @property
    def sequence(self) -> int: ...

    @property
    def status(self) -> str: ...

    @property
    def first_delinquency_date(self) -> dt.date: ...


def check_transition(
    report: p.ReportPayload, current: AccountRecord | None, cleared_at: int | None
) -> None:
    """The account rules a report must pass before anything is written, in the order checked.

    ``current`` is the account's record (None if it has none); ``cleared_at`` the last
    sequence of its cleared records (a cleared account never comes back through a late or
    replayed report, only through a new open after that sequence).
    """
    if current is None:
        if cleared_at is not None and (
            report.kind is not p.Kind.OPEN or report.sequence <= cleared_at
        ):
            raise Conflict(
                "the account's record was cleared; only a new delinquency (an open report with "
                "a sequence after the last one) can be reported for it",
                code="account_cleared",
                extra={"current_sequence": cleared_at},
            )
    elif report.sequence <= current.sequence:
        raise Conflict(
            f"sequence {report.sequence} is not after the account's current sequence",
            code="sequence_stale",
            extra={"current_sequence": current.sequence},
        )
    if report.kind is p.Kind.OPEN:
        if current is not None:
            raise Conflict(
                "the account already has an open record; send an update",
                code="account_already_open",
                extra={"current_sequence": current.sequence},
            )
        return
    if current is None:
        raise Conflict(
            "the account has no open record; send an open report first",
            code="account_not_open",
        )
    if current.status == "settled":
        raise Conflict(
            "the account is settled and awaits clearing; it takes no further reports",
            code="account_settled",
            extra={"current_sequence": current.sequence},
        )
    if report.payment is not None and report.payment.date < current.first_delinquency_date:
        raise ValidationFailed(
            "the payment predates the delinquency",
            errors=[
                FieldError(
                    "payment.date",
                    "not_before_first_delinquency",
                    "must not be before the record's first delinquency date",
                )
            ],
        )


def check_same_borrower(record_borrower_index: bytes, report_borrower_index: bytes) -> None:
    if record_borrower_index != report_borrower_index:
        raise ValidationFailed(
            "a report cannot move an account to another borrower",
            errors=[
                FieldError(
                    "borrower.national_id",
                    "matches_account",
                    "must be the borrower the account was opened for "
                    "(withdraw the record and open it again if it was wrong)",
                )
            ],
        )


def decode_payload(payload: bytes) -> Any:
    try:
        return strictjson.loads_strict(payload)
    except StrictJSONError as exc:
        raise MalformedReport(
            "the envelope payload is not acceptable JSON",
            code="payload_malformed",
            errors=[FieldError("payload", exc.rule, exc.detail)],
        ) from None


CAP_RULES = frozenset({PENALTY_CAP.code, INTEREST_CAP.code})


def record_cap_violations(
    session: Session, caller: Institution, error: RegistryError, now: dt.datetime
) -> int:
    """Count a charging-cap refusal for the operator: member, rule and time, nothing else.

    Called after the refused report's own work was rolled back, in the transaction that goes
    on (the single report's, or the batch's), so the count survives the refusal.
    """
    if not isinstance(error, PolicyViolation):
        return 0
    rules = [e.rule for e in error.errors if e.rule in CAP_RULES]
    for rule in rules:
        session.add(ComplianceViolation(institution_id=caller.id, rule=rule, occurred_at=now))
    return len(rules)
