"""Clearing: a settled, withdrawn or expired record is deleted for real, not flagged.

Clearing deletes the record, its history and stored envelopes, and its data key (so any copy of
the ciphertext, in a backup or a freed page, can no longer be decrypted); removes the borrower's
row when nothing else refers to it; leaves a tombstone without personal data; and keeps a signed
clearance certificate for the borrower for the policy's period. The sweeper applies the
time-based rules; it is idempotent and safe to run twice at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Table,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker

from crypto import dsse
from crypto import envelope_encryption as ee
from registry.authn import purge_nonces
from registry.db import checkpoint_wal
from registry.masking import mask_account_ref
from registry.models import (
    Base,
    Borrower,
    BorrowerStatement,
    ClearanceCertificate,
    DataKey,
    Delinquency,
    Dispute,
    Institution,
    Report,
    Tombstone,
)
from registry.policy import Policy
from registry.secrets import KeyMaterial
from registry.vault import Vault

CERTIFICATE_PAYLOAD_TYPE = "application/vnd.delinquency-registry.clearance+json;version=1"


class ClearReason(enum.StrEnum):
    SETTLED = "settled"
    REPORTED_IN_ERROR = "reported_in_error"
    FRAUD = "fraud"
    MAX_AGE = "max_age"


@dataclass
class SweepReport:
    """What one sweep did, by rule; a second sweep right after reports zeros."""

    cleared: dict[str, int] = field(default_factory=dict)
    certificates_expired: int = 0
    disputes_expired: int = 0
    tombstones_anonymised: int = 0
    nonces_purged: int = 0

    def total(self) -> int:
        return sum(self.cleared.values()) + self.certificates_expired


class Clearable(Protocol):
    """What clearing reads of a record: a loaded ``Delinquency``, or ``DueRecord`` columns."""

    @property
    def id(self) -> int: ...
    @property
    def institution_id(self) -> int: ...
    @property
    def borrower_id(self) -> int: ...
    @property
    def data_key_id(self) -> int: ...
    @property
    def account_index(self) -> bytes: ...
    @property
    def sequence(self) -> int: ...
    @property
    def product(self) -> str: ...
    @property
    def settled_on(self) -> dt.date | None: ...


@dataclass(frozen=True, slots=True)
class DueRecord:
    """A record the sweeper clears, read as plain columns.

    Loading ORM objects only to expunge them again cost about as much as the deletes.
    """

    id: int
    institution_id: int
    borrower_id: int
    data_key_id: int
    account_index: bytes
    sequence: int
    product: str
    settled_on: dt.date | None
    ref: str
    account_ref_ct: bytes


CLEARINGS_NOTED = "registry.clearings"
"""``session.info`` key: the clearings made in the session's transaction, as ``(reason, count)``
pairs in the order they were made (see :func:`note_clearings`)."""


def note_clearings(session: Session, reason: ClearReason, count: int) -> None:
    """Leave in ``session.info`` that ``count`` records were cleared for ``reason``.

    Facts only: whoever counts clearings (``api.observability.watch_clearings``) counts them when
    the transaction commits and drops them when it does not, so ``registry`` holds no metrics
    code and tombstones need not be ORM objects. Pairs are only ever appended, so a savepoint
    that rolls back undoes exactly what was noted after the list's length when it began.
    """
    session.info.setdefault(CLEARINGS_NOTED, []).append((reason.value, count))


_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
"""The certificate document's encoder, made once (``json.dumps`` with options makes one a call)."""

CHUNK = 500
"""Records cleared per round of statements: bounds the rows built in memory per statement and
keeps the one expanded ``IN`` list (blind indexes) well under SQLite's bound-parameter limit."""


@dataclass(frozen=True)
class _Issue:
    """What every certificate of one clearing shares, worked out once rather than per record."""

    reason: ClearReason
    now: dt.datetime
    cleared_at: str
    expires_at: dt.datetime
    keyid: str


def _table(model: type[Base]) -> Table:
    """The model's table, for Core statements whose rows never become ORM objects."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _ids_in(
    connection: Connection,
    column: ColumnElement[int] | QueryableAttribute[int],
    ids: Iterable[int],
) -> ColumnElement[bool]:
    """``column IN ids``, with every id in one bound parameter.

    NOTE: an expanded ``IN`` list of hundreds of placeholders is rendered again by SQLAlchemy on
    every execution, and parsed again by psycopg (too long for its cache); one array (PostgreSQL)
    or JSON (SQLite) parameter keeps the statement short and the same every time.
    """
    values = list(ids)
    if connection.dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(Integer)))
    if connection.dialect.name == "sqlite":
        listed = func.json_each(json.dumps(values)).table_valued("value")
        return column.in_(select(listed.c.value))
    return column.in_(values)


def _forget(session: Session, gone: Mapping[type[Base], Collection[int]]) -> None:
    """Expunge the session's objects for rows deleted around the ORM.

    A later flush would otherwise delete them again, or update a row that is gone.
    """
    doomed = [
        state.obj()
        for state in session.identity_map.all_states()
        if state.key is not None and state.key[1][0] in gone.get(state.key[0], ())
    ]
    for obj in doomed:
        if obj is not None and obj in session:
            session.expunge(obj)


def lock_borrowers(session: Session, borrower_ids: list[int]) -> dict[int, bytes]:
    """Row-lock these borrowers in id order (PostgreSQL; SQLite transactions are serial).

    Returns each locked borrower's blind index (``id_index``), for whoever needs it next.
    """
    if not borrower_ids:
        return {}
    rows = session.execute(
        select(Borrower.id, Borrower.id_index)
        .where(_ids_in(session.connection(), Borrower.id, set(borrower_ids)))
        .order_by(Borrower.id)
        .with_for_update()
    )
    return {borrower_id: id_index for borrower_id, id_index in rows}


class Clearer:
    def __init__(self, material: KeyMaterial, policy: Policy) -> None:
        self._material = material
        self._policy = policy
        self._vault = Vault(material.keyring)

    def clear(
        self,
        session: Session,
        record: Delinquency,
        reason: ClearReason,
        now: dt.datetime,
        *,
        account_ref: str,
    ) -> None:
        """Delete ``record`` and everything personal about it, within the caller's transaction."""
        session.flush()  # a record added in this transaction gets its id
        self.clear_many(session, [record], reason, now, account_refs={record.id: account_ref})

    def clear_many(
        self,
        session: Session,
        records: Sequence[Clearable],
        reason: ClearReason,
        now: dt.datetime,
        *,
        account_refs: Mapping[int, str],
    ) -> None:
        """Clear every record as ``clear`` does one, with a fixed number of statements per chunk.

        ``account_refs`` maps each record's id to its account reference (for the certificate's
        masked reference). The records leave the session: their rows are deleted around the ORM.

        NOTE: every borrower of every record is row-locked, in id order, before asking whether
        another record still refers to them; otherwise two transactions clearing a borrower's
        last two records at once would each see the other's record and both leave the borrower
        (and their ID) behind. Locking all of them first, in one order, also means two callers
        never wait for each other in a cycle.
        """
        if not records:
            return
        # Pending changes (a settlement, a dispute's answer) reach the rows before the rows go.
        session.flush()
        borrower_ids = sorted({r.borrower_id for r in records})
        id_indexes: dict[int, bytes] = {}
        for start in range(0, len(borrower_ids), CHUNK):
            id_indexes |= lock_borrowers(session, borrower_ids[start : start + CHUNK])
        for start in range(0, len(records), CHUNK):
            chunk = records[start : start + CHUNK]
            self._clear_chunk(session, chunk, reason, now, account_refs, id_indexes)

    def _clear_chunk(
        self,
        session: Session,
        records: Sequence[Clearable],
        reason: ClearReason,
        now: dt.datetime,
        account_refs: Mapping[int, str],
        id_indexes: Mapping[int, bytes],
    ) -> None:
        connection = session.connection()
        record_ids = [r.id for r in records]
        codes: dict[int, str] = {
            institution_id: code
            for institution_id, code in connection.execute(
                select(Institution.id, Institution.code).where(
                    Institution.id.in_({r.institution_id for r in records})
                )
            )
        }

        issue = _Issue(
            reason=reason,
            now=now,
            cleared_at=now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            expires_at=now + dt.timedelta(days=self._policy.certificate_retention_days),
            keyid=self._material.signing_keyid,
        )
        key_rows: list[dict[str, Any]] = []
        certificate_rows: list[dict[str, Any]] = []
        for record in records:
            key_row, certificate_row = self._certify(
                record,
                id_indexes[record.borrower_id],
                codes[record.institution_id],
                issue,
                account_ref=account_refs[record.id],
            )
            key_rows.append(key_row)
            certificate_rows.append(certificate_row)
        keys, certificates = _table(DataKey), _table(ClearanceCertificate)
        connection.execute(insert(keys), key_rows)
        # The certificate finds its data key by the key's unique ref: no ids to bring back.
        connection.execute(
            insert(certificates).values(
                data_key_id=select(keys.c.id)
                .where(keys.c.ref == bindparam("key_ref"))
                .scalar_subquery()
            ),
            certificate_rows,
        )
        # The tombstones are copied from the records' rows (flushed above): no row per record
        # goes through Python.
        delinquencies = _table(Delinquency)
        tombstones = _table(Tombstone)
        connection.execute(
            insert(tombstones).from_select(
                ["institution_id", "account_index", "last_sequence", "reason", "cleared_at"],
                select(
                    delinquencies.c.institution_id,
                    delinquencies.c.account_index,
                    delinquencies.c.sequence,
                    bindparam("reason", reason.value, type_=tombstones.c.reason.type),
                    bindparam("cleared_at", now, type_=tombstones.c.cleared_at.type),
                )
                .where(_ids_in(connection, delinquencies.c.id, record_ids))
                .order_by(delinquencies.c.id),
            )
        )

        gone: dict[type[Base], list[int]] = {Delinquency: record_ids}
        doomed_keys = [r.data_key_id for r in records]
        reports = _table(Report)
        gone[Report] = list(
            connection.execute(
                delete(reports)
                .where(_ids_in(connection, reports.c.delinquency_id, record_ids))
                .returning(reports.c.id)
            ).scalars()
        )
        # NOTE: the foreign-key cascade would delete disputes and statements but leave their
        # data keys behind, and a surviving key keeps any copied ciphertext readable.
        statements = _table(BorrowerStatement)
        for model in (Dispute, BorrowerStatement):
            table = _table(model)
            rows = connection.execute(
                delete(table)
                .where(_ids_in(connection, table.c.delinquency_id, record_ids))
                .returning(table.c.id, table.c.data_key_id)
            ).all()
            gone[model] = [row.id for row in rows]
            doomed_keys += [row.data_key_id for row in rows]
        connection.execute(
            delete(delinquencies).where(_ids_in(connection, delinquencies.c.id, record_ids))
        )

        # Borrowers left without any record go too, with the statements on their whole file.
        borrowers = _table(Borrower)
        orphans = connection.execute(
            select(borrowers.c.id, borrowers.c.id_index, borrowers.c.data_key_id).where(
                _ids_in(connection, borrowers.c.id, {r.borrower_id for r in records}),
                ~exists().where(delinquencies.c.borrower_id == borrowers.c.id),
            )
        ).all()
        if orphans:
            rows = connection.execute(
                delete(statements)
                .where(statements.c.borrower_index.in_([o.id_index for o in orphans]))
                .returning(statements.c.id, statements.c.data_key_id)
            ).all()
            gone[BorrowerStatement] += [row.id for row in rows]
            doomed_keys += [row.data_key_id for row in rows]
            gone[Borrower] = [o.id for o in orphans]
            connection.execute(
                delete(borrowers).where(_ids_in(connection, borrowers.c.id, gone[Borrower]))
            )
            doomed_keys += [o.data_key_id for o in orphans]
        data_keys = _table(DataKey)
        connection.execute(
            delete(data_keys).where(_ids_in(connection, data_keys.c.id, doomed_keys))
        )
        gone[DataKey] = doomed_keys
        _forget(session, {model: set(ids) for model, ids in gone.items()})
        note_clearings(session, reason, len(records))

    def _certify(
        self,
        record: Clearable,
        borrower_index: bytes,
        institution_code: str,
        issue: _Issue,
        *,
        account_ref: str,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The signed certificate of one clearing: its data key's row and its own row.

        The certificate row names its key by ``key_ref`` (the key's ``ref``), for the insert.
        """
        ref = secrets.token_hex(16)
        document = {
            "version": 1,
            "certificate_id": ref,
            "institution": institution_code,
            "account": mask_account_ref(account_ref),
            "product": record.product,
            "reason": issue.reason.value,
            "settled_on": record.settled_on.isoformat() if record.settled_on else None,
            "cleared_at": issue.cleared_at,
        }
        signed = dsse.sign_envelope(
            CERTIFICATE_PAYLOAD_TYPE,
            _CANONICAL_JSON.encode(document).encode(),
            self._material.signing_key,
            issue.keyid,
        )
        key_row, key = self._vault.new_key_values(issue.now)
        certificate_row = {
            "ref": ref,
            "borrower_index": borrower_index,
            "key_ref": key_row["ref"],
            "certificate_ct": self._vault.seal(
                key, "clearance_certificates", "certificate", ref, signed
            ),
            "issued_at": issue.now,
            "expires_at": issue.expires_at,
        }
        return key_row, certificate_row

    def account_ref(self, record: Delinquency) -> str:
        key = self._vault.open_key(record.data_key)
        return self._vault.unseal(
            key, "delinquencies", "account_ref", record.ref, record.account_ref_ct
        ).decode()

    def certificates_for(self, session: Session, borrower_index: bytes) -> list[bytes]:
        """The signed certificates kept for a borrower (for the borrower's own view)."""
        rows = session.scalars(
            select(ClearanceCertificate)
            .where(ClearanceCertificate.borrower_index == borrower_index)
            .order_by(ClearanceCertificate.issued_at)
        )
        out = []
        for row in rows:
            key = self._vault.open_key(row.data_key)
            out.append(
                self._vault.unseal(
                    key, "clearance_certificates", "certificate", row.ref, row.certificate_ct
                )
            )
        return out

    # --- the sweeper ---------------------------------------------------------------------

    def sweep(
        self,
        sessions: sessionmaker[Session],
        now: dt.datetime,
        *,
        batch: int = 500,
    ) -> SweepReport:
        """Apply every time-based rule once. Each batch is its own transaction."""
        report = SweepReport()
        today = now.date()
        rules: list[tuple[ClearReason, str, Callable[[], object]]] = []
        if self._policy.retention_days_after_settlement is not None:
            cutoff = today - dt.timedelta(days=self._policy.retention_days_after_settlement)
            rules.append(
                (ClearReason.SETTLED, "retention", lambda: Delinquency.settled_on <= cutoff)
            )
        oldest = today - dt.timedelta(days=self._policy.max_age_days)
        rules.append(
            (ClearReason.MAX_AGE, "max_age", lambda: Delinquency.first_delinquency_date <= oldest)
        )
        for reason, name, condition in rules:
            report.cleared[name] = self._clear_matching(sessions, condition, reason, now, batch)
        report.certificates_expired = self._expire_certificates(sessions, now, batch)
        # NOTE: imported here because disputes clear records through this module.
        from registry.disputes import expire_overdue

        report.disputes_expired = expire_overdue(sessions, self._material, now, batch=batch)
        with sessions() as session, session.begin():
            horizon = now - dt.timedelta(days=self._policy.max_age_days)
            result = session.execute(
                update(Tombstone)
                .where(Tombstone.cleared_at <= horizon, Tombstone.account_index.is_not(None))
                .values(account_index=None)
            )
            report.tombstones_anonymised = int(getattr(result, "rowcount", 0) or 0)
            session.execute(
                delete(Report).where(Report.delinquency_id.is_(None), Report.accepted_at <= horizon)
            )
            report.nonces_purged = purge_nonces(session, now)
        bind = sessions.kw.get("bind")
        if report.total() and bind is not None:
            checkpoint_wal(bind)
        return report

    def _clear_matching(
        self,
        sessions: sessionmaker[Session],
        condition: Callable[[], object],
        reason: ClearReason,
        now: dt.datetime,
        batch: int,
    ) -> int:
        columns = [getattr(Delinquency, f.name) for f in dataclasses.fields(DueRecord)]
        cleared = 0
        while True:
            with sessions() as session, session.begin():
                connection = session.connection()
                records = [
                    DueRecord(*row)
                    for row in connection.execute(
                        select(*columns)
                        .where(condition())  # type: ignore[arg-type]
                        .order_by(Delinquency.id)
                        .limit(batch)
                        .with_for_update(skip_locked=True)
                    )
                ]
                if records:
                    self.clear_many(
                        session,
                        records,
                        reason,
                        now,
                        account_refs=self._account_refs(session, records),
                    )
                cleared += len(records)
            if len(records) < batch:
                return cleared

    def _account_refs(self, session: Session, records: Sequence[DueRecord]) -> dict[int, str]:
        """Every record's account reference, with their data keys read in one query."""
        keys = {
            key_id: ee.unwrap_data_key(self._material.keyring, version, wrapped, key_ref=ref)
            for key_id, version, wrapped, ref in session.connection().execute(
                select(DataKey.id, DataKey.master_version, DataKey.wrapped, DataKey.ref).where(
                    _ids_in(session.connection(), DataKey.id, [r.data_key_id for r in records])
                )
            )
        }
        return {
            r.id: self._vault.unseal(
                keys[r.data_key_id], "delinquencies", "account_ref", r.ref, r.account_ref_ct
            ).decode()
            for r in records
        }

    def _expire_certificates(
        self, sessions: sessionmaker[Session], now: dt.datetime, batch: int
    ) -> int:
        certificates, keys = _table(ClearanceCertificate), _table(DataKey)
        expired = 0
        while True:
            with sessions() as session, session.begin():
                connection = session.connection()
                rows = connection.execute(
                    select(certificates.c.id, certificates.c.data_key_id)
                    .where(certificates.c.expires_at <= now)
                    .order_by(certificates.c.id)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                ).all()
                if rows:
                    connection.execute(
                        delete(certificates).where(
                            _ids_in(connection, certificates.c.id, [r.id for r in rows])
                        )
                    )
                    connection.execute(
                        delete(keys).where(
                            _ids_in(connection, keys.c.id, [r.data_key_id for r in rows])
                        )
                    )
                expired += len(rows)
            if len(rows) < batch:
                return expired
