"""Clearing: a settled, withdrawn or expired record is deleted for real, not flagged.

Clearing deletes the record, its history and stored envelopes, and its data key (so any copy of
the ciphertext, in a backup or a freed page, can no longer be decrypted); removes the borrower's
row when nothing else refers to it; leaves a tombstone without personal data; and keeps a signed
clearance certificate for the borrower for the policy's period. The sweeper applies the
time-based rules; it is idempotent and safe to run twice at once.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import secrets
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    String,
    Table,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker

from crypto import dsse
from crypto import envelope_encryption as ee
from registry import bulk
from registry.authn import purge_nonces
from registry.db import begin_read, checkpoint_wal
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


class DueRecord(NamedTuple):
    """A record the sweeper clears, read as plain columns, with what its certificate needs
    besides (its member's code, its data key's columns).

    Loading ORM objects only to expunge them again cost about as much as the deletes. A tuple:
    cheap to build, and equal to another only when every column is (see ``_write_certified``).
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
    institution_code: str
    key_version: int
    key_wrapped: bytes
    key_ref: str
    borrower_index: bytes


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
"""Records cleared per round of statements, and the sweeper's records per transaction: bounds
the rows built in memory per statement and how long a transaction holds its locks."""

SWEEP_WORKERS: Mapping[str, int] = {"postgresql": 2, "sqlite": 1}
"""Threads that clear one sweep rule's records side by side, by engine (one elsewhere), each a
chunk at a time in its own transaction.

On PostgreSQL the deletes and their foreign-key checks run in the server's processes: while one
thread's chunk is written there, the other signs its next chunk (Ed25519 signing also lets go of
the GIL). On SQLite a second such thread gained nothing measurable (both want the one write
lock); instead each thread claims and certifies its next chunk in a helper thread, without the
write lock, while it writes the one before (``Clearer._sweep_serial``)."""


@dataclass(frozen=True)
class _Issue:
    """What every certificate of one clearing shares, worked out once rather than per record."""

    reason: ClearReason
    now: dt.datetime
    cleared_at: str
    expires_at: dt.datetime
    keyid: str


class _Certificate(NamedTuple):
    """A signed, sealed certificate not yet written, and its data key's columns.

    Ids (the key's, and the certificate's reference to it) and the borrower's index are added
    when it is written, under the locks of the transaction that clears its record.
    """

    ref: str
    sealed: bytes
    key_ref: str
    key_version: int
    key_wrapped: bytes


class _Claims:
    """Hands one rule's due records to the sweep's threads, a chunk each, each record once.

    With ``locks`` (PostgreSQL) the claim's row locks keep the threads apart (``SKIP LOCKED``),
    and every claim starts from the lowest due id: a record a member's report held for a moment
    is claimed on a later round of the same sweep. Without (SQLite: a thread claims without any
    lock) a cursor, the last id handed out, keeps two threads from certifying the same records.
    """

    def __init__(self, query: Select[Any], batch: int, *, locks: bool) -> None:
        self._query = query
        self._batch = batch
        self._locks = locks
        self._lock = threading.Lock()
        self._after = 0
        self._done = False
        self.signed = threading.Event()
        """Set once a chunk has been certified (or a thread ended): see ``_clear_matching``."""
        self.writing = threading.Lock()
        """Held by the thread in SQLite's write transaction: the other waits on it, and is woken
        when it is free, instead of polling SQLite's lock in the busy handler's growing sleeps."""

    def take(self, connection: Connection) -> list[DueRecord]:
        """The next chunk (fewer than ``batch`` when the rule has no more), in id order."""
        with self._lock:
            if self._done:
                return []
            rows = connection.execute(self._query, {"after": self._after}).all()
            if len(rows) < self._batch:
                self._done = True
            if rows and not self._locks:
                self._after = rows[-1][0]
        return [DueRecord(*row) for row in rows]

    def stop(self) -> None:
        """No more chunks for anyone (a thread failed: the others finish theirs and return)."""
        with self._lock:
            self._done = True


_RECORD_COLUMNS = DueRecord._fields[: DueRecord._fields.index("institution_code")]


def _due(condition: ColumnElement[bool]) -> Select[Any]:
    """Due records as ``DueRecord`` columns, in id order."""
    return (
        select(
            *(getattr(Delinquency, name) for name in _RECORD_COLUMNS),
            Institution.code,
            DataKey.master_version,
            DataKey.wrapped,
            DataKey.ref,
            Borrower.id_index,
        )
        .join(Institution, Institution.id == Delinquency.institution_id)
        .join(DataKey, DataKey.id == Delinquency.data_key_id)
        .join(Borrower, Borrower.id == Delinquency.borrower_id)
        .where(condition)
        .order_by(Delinquency.id)
    )


def _holds_claims(session: Session) -> bool:
    """True where a claim's row locks can last while it is certified (PostgreSQL).

    On SQLite any write transaction holds the one write lock: a chunk is claimed and certified
    outside it, and what is still due is read again under it.
    """
    return session.get_bind().dialect.name != "sqlite"


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
    or JSON (SQLite) parameter keeps the statement short and the same every time. The array
    goes as its text form, cast by the server: psycopg builds a list parameter in Python, about
    0.3 ms for 500 ids, and a chunk sends nine. It is joined as ``IN (SELECT unnest(...))``,
    not compared with ``= ANY``: on a table not analysed yet (right after a bulk of intake) the
    planner scans it, and ``= ANY`` of a parameter then compares every row with every id (a
    sweep ran at 2,000 instead of 5,000 records/s); the semi-join hashes the ids instead.
    """
    listed = ",".join(str(int(value)) for value in ids)
    if connection.dialect.name == "postgresql":
        array = cast(bindparam(None, f"{{{listed}}}", type_=String), postgresql.ARRAY(Integer))
        return column.in_(select(func.unnest(array)))
    if connection.dialect.name == "sqlite":
        rows = func.json_each(f"[{listed}]").table_valued("value")
        return column.in_(select(rows.c.value))
    return column.in_([int(value) for value in listed.split(",") if value])


def _insert(
    connection: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Insert ``rows``, values ready for the driver in ``columns``' order (nothing per value in
    Python): one binary ``COPY`` on PostgreSQL, one ``executemany`` of a plain INSERT
    elsewhere."""
    if connection.dialect.name != "postgresql":
        # SQLite's paramstyle is positional (qmark): the compiled INSERT takes the tuples as is.
        compiled = insert(table).compile(dialect=connection.dialect, column_keys=list(columns))
        if compiled.positiontup != list(columns):
            raise ValueError(f"name {table.name}'s columns in the table's order")
        connection.exec_driver_sql(str(compiled), rows)
        return
    bulk.copy_values(connection, table, columns, rows, binary=True)


def _bound(connection: Connection, table: Table, column: str, value: Any) -> Any:
    """``value`` as the column's type hands it to the driver (a UTC timestamp, on SQLite its
    text), worked out once for every row of a chunk."""
    process = table.c[column].type.bind_processor(connection.dialect)
    return value if process is None else process(value)


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


def _copy_tombstones(connection: Connection, record_ids: list[int], issue: _Issue) -> None:
    """One tombstone per record, copied from the record's row by the database."""
    delinquencies, tombstones = _table(Delinquency), _table(Tombstone)
    connection.execute(
        insert(tombstones).from_select(
            ["institution_id", "account_index", "last_sequence", "reason", "cleared_at"],
            select(
                delinquencies.c.institution_id,
                delinquencies.c.account_index,
                delinquencies.c.sequence,
                bindparam("reason", issue.reason.value, type_=tombstones.c.reason.type),
                bindparam("cleared_at", issue.now, type_=tombstones.c.cleared_at.type),
            )
            .where(_ids_in(connection, delinquencies.c.id, record_ids))
            .order_by(delinquencies.c.id),
        )
    )


def _delete_statement_by_statement(
    connection: Connection, records: Sequence[Clearable], record_ids: list[int]
) -> dict[type[Base], list[int]]:
    """Delete the records and what hangs off them, a statement per table (SQLite); the ids
    deleted, by model. The borrowers must be locked (or the transaction serial)."""
    delinquencies = _table(Delinquency)
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
        select(borrowers.c.id, borrowers.c.data_key_id).where(
            _ids_in(connection, borrowers.c.id, {r.borrower_id for r in records}),
            ~exists().where(delinquencies.c.borrower_id == borrowers.c.id),
        )
    ).all()
    if orphans:
        gone[Borrower] = [o.id for o in orphans]
        # Their blind indexes are read by the database, not sent again.
        rows = connection.execute(
            delete(statements)
            .where(
                statements.c.borrower_index.in_(
                    select(borrowers.c.id_index).where(
                        _ids_in(connection, borrowers.c.id, gone[Borrower])
                    )
                )
            )
            .returning(statements.c.id, statements.c.data_key_id)
        ).all()
        gone[BorrowerStatement] += [row.id for row in rows]
        doomed_keys += [row.data_key_id for row in rows]
        connection.execute(
            delete(borrowers).where(_ids_in(connection, borrowers.c.id, gone[Borrower]))
        )
        doomed_keys += [o.data_key_id for o in orphans]
    data_keys = _table(DataKey)
    connection.execute(delete(data_keys).where(_ids_in(connection, data_keys.c.id, doomed_keys)))
    gone[DataKey] = doomed_keys
    return gone


_DELETE_CLEARED = text(
    """
WITH chunk AS MATERIALIZED (SELECT unnest(CAST(:ids AS INTEGER[])) AS id),
tomb AS (
    INSERT INTO tombstones (institution_id, account_index, last_sequence, reason, cleared_at)
    SELECT d.institution_id, d.account_index, d.sequence, :reason, :cleared_at
    FROM delinquencies d WHERE d.id IN (SELECT id FROM chunk) ORDER BY d.id
),
rep AS (DELETE FROM reports WHERE delinquency_id IN (SELECT id FROM chunk) RETURNING id),
dis AS (
    DELETE FROM disputes WHERE delinquency_id IN (SELECT id FROM chunk)
    RETURNING id, data_key_id
),
st AS (
    DELETE FROM borrower_statements WHERE delinquency_id IN (SELECT id FROM chunk)
    RETURNING id, data_key_id
),
rec AS (
    DELETE FROM delinquencies WHERE id IN (SELECT id FROM chunk)
    RETURNING borrower_id, data_key_id
),
orphan AS (
    DELETE FROM borrowers b
    WHERE b.id IN (SELECT borrower_id FROM rec)
    AND NOT EXISTS (
        SELECT FROM delinquencies d
        WHERE d.borrower_id = b.id AND d.id NOT IN (SELECT id FROM chunk)
    )
    RETURNING b.id, b.id_index, b.data_key_id
),
file AS (
    DELETE FROM borrower_statements s
    WHERE s.borrower_index IN (SELECT id_index FROM orphan)
    AND (s.delinquency_id IS NULL OR s.delinquency_id NOT IN (SELECT id FROM chunk))
    RETURNING s.id, s.data_key_id
),
shredded AS (
    DELETE FROM data_keys WHERE id IN (
        SELECT data_key_id FROM rec
        UNION ALL SELECT data_key_id FROM dis
        UNION ALL SELECT data_key_id FROM st
        UNION ALL SELECT data_key_id FROM orphan
        UNION ALL SELECT data_key_id FROM file
    )
    RETURNING id
)
SELECT
    (SELECT count(*) FROM rec) AS records,
    ARRAY(SELECT id FROM rep) AS reports,
    ARRAY(SELECT id FROM dis) AS disputes,
    ARRAY(SELECT id FROM st UNION ALL SELECT id FROM file) AS statements,
    ARRAY(SELECT id FROM orphan) AS borrowers,
    ARRAY(SELECT id FROM shredded) AS data_keys
"""
).bindparams(
    bindparam("ids", type_=String),
    bindparam("reason", type_=_table(Tombstone).c.reason.type),
    bindparam("cleared_at", type_=_table(Tombstone).c.cleared_at.type),
)
"""The whole of clearing a chunk on PostgreSQL, but its certificates, as one statement.

Every part reads the snapshot taken before any of it ran: the tombstones copy the records'
rows, and a borrower is an orphan when no record outside the chunk refers to them (the
borrowers are row-locked beforehand, so no other transaction can add one). The foreign-key
checks run at the end of the statement and see all of it done: a key goes in the same
statement as every row that used it. One round trip instead of eleven, and no anti-join of a
table against a list that the planner misjudged (the orphans' query had taken 15-18 ms a chunk
comparing every borrower with every id)."""


def _delete_in_one_statement(
    connection: Connection, record_ids: list[int], issue: _Issue
) -> dict[type[Base], list[int]]:
    """Tombstone and delete the records and what hangs off them (PostgreSQL); the ids deleted,
    by model."""
    row = connection.execute(
        _DELETE_CLEARED,
        {
            "ids": "{" + ",".join(str(int(i)) for i in record_ids) + "}",
            "reason": issue.reason.value,
            "cleared_at": issue.now,
        },
    ).one()
    if row.records != len(record_ids):
        # Only rows this transaction holds are cleared: anything else is a bug, not a race.
        raise RuntimeError(f"cleared {row.records} of {len(record_ids)} records")
    return {
        Delinquency: record_ids,
        Report: list(row.reports),
        Dispute: list(row.disputes),
        BorrowerStatement: list(row.statements),
        Borrower: list(row.borrowers),
        DataKey: list(row.data_keys),
    }


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
        """
        if not records:
            return
        # Pending changes (a settlement, a dispute's answer) reach the rows before the rows go.
        session.flush()
        issue = self._issue(reason, now)
        codes: dict[int, str] = {
            institution_id: code
            for institution_id, code in session.connection().execute(
                select(Institution.id, Institution.code).where(
                    Institution.id.in_({r.institution_id for r in records})
                )
            )
        }
        certificates = [
            self._certify(r, codes[r.institution_id], issue, account_ref=account_refs[r.id])
            for r in records
        ]
        self._clear_certified(session, records, certificates, issue)

    def _clear_certified(
        self,
        session: Session,
        records: Sequence[Clearable],
        certificates: Sequence[_Certificate],
        issue: _Issue,
        *,
        serial: Mapping[int, bytes] | None = None,
    ) -> None:
        """Delete ``records`` and write their certificates (``certificates[i]`` is records[i]'s).

        NOTE: every borrower of every record is row-locked, in id order, before asking whether
        another record still refers to them; otherwise two transactions clearing a borrower's
        last two records at once would each see the other's record and both leave the borrower
        (and their ID) behind. Locking all of them first, in one order, also means two callers
        never wait for each other in a cycle. ``serial``: the borrowers' blind indexes, read in
        this transaction, where transactions are serial (SQLite) and there is nothing to lock.
        """
        id_indexes: dict[int, bytes] = dict(serial or {})
        if serial is None:
            borrower_ids = sorted({r.borrower_id for r in records})
            for start in range(0, len(borrower_ids), CHUNK):
                id_indexes |= lock_borrowers(session, borrower_ids[start : start + CHUNK])
        for start in range(0, len(records), CHUNK):
            self._clear_chunk(
                session,
                records[start : start + CHUNK],
                certificates[start : start + CHUNK],
                issue,
                id_indexes,
            )

    def _clear_chunk(
        self,
        session: Session,
        records: Sequence[Clearable],
        certificates: Sequence[_Certificate],
        issue: _Issue,
        id_indexes: Mapping[int, bytes],
    ) -> None:
        connection = session.connection()
        record_ids = [r.id for r in records]
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            gone = _delete_in_one_statement(connection, record_ids, issue)
        else:
            # The tombstones are copied from the records' rows (flushed above): no row per
            # record goes through Python. First, because on SQLite this write takes the write
            # lock (if the transaction has not yet) before the data keys' ids are counted from
            # the largest.
            _copy_tombstones(connection, record_ids, issue)
        self._write_certificates(connection, records, certificates, issue, id_indexes)
        if not postgres:
            gone = _delete_statement_by_statement(connection, records, record_ids)
        _forget(session, {model: set(ids) for model, ids in gone.items()})
        note_clearings(session, issue.reason, len(records))

    def _write_certificates(
        self,
        connection: Connection,
        records: Sequence[Clearable],
        certificates: Sequence[_Certificate],
        issue: _Issue,
        id_indexes: Mapping[int, bytes],
    ) -> None:
        """The certificates and their keys. The keys get their ids up front, so each certificate
        names its key directly and both tables go out as one COPY (PostgreSQL) or executemany
        each."""
        keys, certificates_table = _table(DataKey), _table(ClearanceCertificate)
        [key_ids] = bulk.next_ids(connection, [(keys, len(records))])
        created = _bound(connection, keys, "created_at", issue.now)
        issued = _bound(connection, certificates_table, "issued_at", issue.now)
        expires = _bound(connection, certificates_table, "expires_at", issue.expires_at)
        _insert(
            connection,
            keys,
            ("id", "ref", "master_version", "wrapped", "created_at"),
            [
                (key_id, c.key_ref, c.key_version, c.key_wrapped, created)
                for c, key_id in zip(certificates, key_ids, strict=True)
            ],
        )
        _insert(
            connection,
            certificates_table,
            ("ref", "borrower_index", "data_key_id", "certificate_ct", "issued_at", "expires_at"),
            [
                (c.ref, id_indexes[r.borrower_id], key_id, c.sealed, issued, expires)
                for r, c, key_id in zip(records, certificates, key_ids, strict=True)
            ],
        )

    def _issue(self, reason: ClearReason, now: dt.datetime) -> _Issue:
        return _Issue(
            reason=reason,
            now=now,
            cleared_at=now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            expires_at=now + dt.timedelta(days=self._policy.certificate_retention_days),
            keyid=self._material.signing_keyid,
        )

    def _certify(
        self,
        record: Clearable,
        institution_code: str,
        issue: _Issue,
        *,
        account_ref: str,
    ) -> _Certificate:
        """The signed, sealed certificate of one clearing, and its data key; nothing written.

        Reads nothing from the database, so the sweeper can sign outside any lock.
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
        key = ee.new_data_key()
        key_ref = secrets.token_hex(16)
        version, wrapped = ee.wrap_data_key(self._material.keyring, key, key_ref=key_ref)
        return _Certificate(
            ref=ref,
            sealed=self._vault.seal(key, "clearance_certificates", "certificate", ref, signed),
            key_ref=key_ref,
            key_version=version,
            key_wrapped=wrapped,
        )

    def _certify_due(self, record: DueRecord, issue: _Issue) -> _Certificate:
        """``_certify`` for a claimed record, whose account reference is read with its key."""
        key = ee.unwrap_data_key(
            self._material.keyring, record.key_version, record.key_wrapped, key_ref=record.key_ref
        )
        account_ref = self._vault.unseal(
            key, "delinquencies", "account_ref", record.ref, record.account_ref_ct
        ).decode()
        return self._certify(record, record.institution_code, issue, account_ref=account_ref)

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
        batch: int = CHUNK,
        workers: int | None = None,
    ) -> SweepReport:
        """Apply every time-based rule once. Each batch is its own transaction.

        ``workers`` threads clear a rule's records side by side; by default the engine's number
        in ``SWEEP_WORKERS``.
        """
        if workers is None:
            with sessions() as session:
                workers = SWEEP_WORKERS.get(session.get_bind().dialect.name, 1)
        report = SweepReport()
        today = now.date()
        rules: list[tuple[ClearReason, str, ColumnElement[bool]]] = []
        if self._policy.retention_days_after_settlement is not None:
            cutoff = today - dt.timedelta(days=self._policy.retention_days_after_settlement)
            rules.append((ClearReason.SETTLED, "retention", Delinquency.settled_on <= cutoff))
        oldest = today - dt.timedelta(days=self._policy.max_age_days)
        rules.append((ClearReason.MAX_AGE, "max_age", Delinquency.first_delinquency_date <= oldest))
        for reason, name, condition in rules:
            report.cleared[name] = self._clear_matching(
                sessions, condition, self._issue(reason, now), batch, workers
            )
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
        condition: ColumnElement[bool],
        issue: _Issue,
        batch: int,
        workers: int,
    ) -> int:
        """Clear every record matching ``condition``, a chunk per transaction, in threads."""
        with sessions() as session:
            locks = _holds_claims(session)
        claims = _Claims(
            _due(condition)
            .where(Delinquency.id > bindparam("after", type_=Integer))
            .limit(batch)
            .with_for_update(skip_locked=True, of=Delinquency),
            batch,
            locks=locks,
        )

        def drain(first: bool) -> int:
            # NOTE: the others start once the first has signed its first chunk. Started together
            # they sign at the same time, then write at the same time, and keep that step: the
            # signing no longer overlaps the other thread's writing, which is the point.
            if not first:
                claims.signed.wait()
            cleared = 0
            try:
                if locks:
                    while (done := self._sweep_claimed(sessions, claims, issue)) is not None:
                        cleared += done
                else:
                    cleared = self._sweep_serial(sessions, claims, condition, issue)
            except BaseException:
                claims.stop()
                raise
            finally:
                claims.signed.set()
            return cleared

        if workers <= 1:
            return drain(True)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sweeper") as pool:
            running = [pool.submit(drain, n == 0) for n in range(workers)]
            return sum(future.result() for future in running)

    def _sweep_claimed(
        self, sessions: sessionmaker[Session], claims: _Claims, issue: _Issue
    ) -> int | None:
        """Claim, certify and clear one chunk (PostgreSQL); how many were cleared (None: nothing
        left). The claim's row locks (``FOR UPDATE SKIP LOCKED``) hold until the commit."""
        with sessions() as session, session.begin():
            claimed = claims.take(session.connection())
            if not claimed:
                return None
            certificates = [self._certify_due(r, issue) for r in claimed]
            claims.signed.set()
            self._clear_certified(session, claimed, certificates, issue)
            return len(claimed)

    def _sweep_serial(
        self,
        sessions: sessionmaker[Session],
        claims: _Claims,
        condition: ColumnElement[bool],
        issue: _Issue,
    ) -> int:
        """Clear the rule's records a chunk at a time (SQLite), each chunk claimed and certified
        in a thread while the one before it is written; how many were cleared.

        Ed25519 signing and SQLite's statements and commits all let go of the GIL, so the two
        run on two cores: certifying was 40% of a sweep's time and the writing the rest.
        """
        cleared = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweeper-certify") as certify:
            pending = certify.submit(self._claim_certified, sessions, claims, issue)
            try:
                while (signed := pending.result()) is not None:
                    pending = certify.submit(self._claim_certified, sessions, claims, issue)
                    cleared += self._write_certified(sessions, claims, condition, issue, signed)
            except BaseException:
                claims.stop()
                raise
        return cleared

    def _claim_certified(
        self, sessions: sessionmaker[Session], claims: _Claims, issue: _Issue
    ) -> dict[int, tuple[DueRecord, _Certificate]] | None:
        """The next chunk's records and certificates, by id, made without the write lock (None:
        nothing left)."""
        with sessions() as session:
            begin_read(session)
            claimed = claims.take(session.connection())
            session.rollback()  # the read wrote nothing; SQLite lets go of its snapshot
        if not claimed:
            return None
        signed = {r.id: (r, self._certify_due(r, issue)) for r in claimed}
        claims.signed.set()
        return signed

    def _write_certified(
        self,
        sessions: sessionmaker[Session],
        claims: _Claims,
        condition: ColumnElement[bool],
        issue: _Issue,
        signed: Mapping[int, tuple[DueRecord, _Certificate]],
    ) -> int:
        """Clear what of a certified chunk is still due, read again under the write lock
        (``BEGIN IMMEDIATE``); a record that changed since it was claimed is certified again
        from its new columns. How many were cleared."""
        with sessions() as session, claims.writing, session.begin():
            current = self._still_due(session.connection(), condition, list(signed))
            certificates = []
            for record in current:
                before, certificate = signed[record.id]
                if before != record:
                    certificate = self._certify_due(record, issue)
                certificates.append(certificate)
            if current:
                indexes = {r.borrower_id: r.borrower_index for r in current}
                self._clear_certified(session, current, certificates, issue, serial=indexes)
            return len(current)

    def _still_due(
        self, connection: Connection, condition: ColumnElement[bool], ids: list[int]
    ) -> list[DueRecord]:
        """Which of these records are still due, as they are now (under the write lock)."""
        query = _due(condition).where(_ids_in(connection, Delinquency.id, ids))
        return [DueRecord(*row) for row in connection.execute(query)]

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
