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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from crypto import dsse
from registry.authn import purge_nonces
from registry.db import checkpoint_wal
from registry.masking import mask_account_ref
from registry.models import (
    Borrower,
    BorrowerStatement,
    ClearanceCertificate,
    DataKey,
    Delinquency,
    Dispute,
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


def _delete_keyed(
    session: Session, model: type[Dispute] | type[BorrowerStatement], condition: Any
) -> list[int]:
    """Delete a record's or file's dependent rows; returns their data keys, to destroy.

    NOTE: the foreign-key cascade would delete the rows but leave their data keys behind,
    and a surviving key keeps any copied ciphertext readable.
    """
    keys = list(session.scalars(select(model.data_key_id).where(condition)))
    if keys:
        session.execute(delete(model).where(condition))
    return keys


def lock_borrowers(session: Session, borrower_ids: list[int]) -> None:
    """Row-lock these borrowers in id order (PostgreSQL; SQLite transactions are serial)."""
    if borrower_ids:
        session.execute(
            select(Borrower.id)
            .where(Borrower.id.in_(sorted(set(borrower_ids))))
            .order_by(Borrower.id)
            .with_for_update()
        ).all()


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
        """Delete ``record`` and everything personal about it, within the caller's transaction.

        NOTE: the borrower's row is locked before asking whether another record still refers
        to it; otherwise two transactions clearing a borrower's last two records at once would
        each see the other's record and both leave the borrower (and their ID) behind.
        """
        lock_borrowers(session, [record.borrower_id])
        borrower = record.borrower
        self._certify(session, record, borrower, reason, now, account_ref=account_ref)
        session.add(
            Tombstone(
                institution_id=record.institution_id,
                account_index=record.account_index,
                last_sequence=record.sequence,
                reason=reason.value,
                cleared_at=now,
            )
        )
        data_key_id = record.data_key_id
        session.execute(delete(Report).where(Report.delinquency_id == record.id))
        # The bulk delete went around the ORM: forget any loaded reports of the record, or
        # deleting the record would try to delete them a second time.
        session.expire(record, ["reports"])
        attached = _delete_keyed(session, Dispute, Dispute.delinquency_id == record.id)
        attached += _delete_keyed(
            session, BorrowerStatement, BorrowerStatement.delinquency_id == record.id
        )
        session.delete(record)
        session.flush()
        session.execute(delete(DataKey).where(DataKey.id.in_([data_key_id, *attached])))
        others = session.scalar(select(exists().where(Delinquency.borrower_id == borrower.id)))
        if not others:
            borrower_key = borrower.data_key_id
            # The borrower's statement on the whole file goes with the file.
            attached = _delete_keyed(
                session, BorrowerStatement, BorrowerStatement.borrower_index == borrower.id_index
            )
            session.delete(borrower)
            session.flush()
            session.execute(delete(DataKey).where(DataKey.id.in_([borrower_key, *attached])))

    def _certify(
        self,
        session: Session,
        record: Delinquency,
        borrower: Borrower,
        reason: ClearReason,
        now: dt.datetime,
        *,
        account_ref: str,
    ) -> None:
        ref = secrets.token_hex(16)
        document = {
            "version": 1,
            "certificate_id": ref,
            "institution": record.institution.code,
            "account": mask_account_ref(account_ref),
            "product": record.product,
            "reason": reason.value,
            "settled_on": record.settled_on.isoformat() if record.settled_on else None,
            "cleared_at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        signed = dsse.sign_envelope(
            CERTIFICATE_PAYLOAD_TYPE,
            json.dumps(document, sort_keys=True, separators=(",", ":")).encode(),
            self._material.signing_key,
            self._material.signing_keyid,
        )
        data_key, key = self._vault.new_key(session, now)
        session.add(
            ClearanceCertificate(
                ref=ref,
                borrower_index=borrower.id_index,
                data_key=data_key,
                certificate_ct=self._vault.seal(
                    key, "clearance_certificates", "certificate", ref, signed
                ),
                issued_at=now,
                expires_at=now + dt.timedelta(days=self._policy.certificate_retention_days),
            )
        )

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
        cleared = 0
        while True:
            with sessions() as session, session.begin():
                records = list(
                    session.scalars(
                        select(Delinquency)
                        .where(condition())  # type: ignore[arg-type]
                        .order_by(Delinquency.id)
                        .limit(batch)
                        .with_for_update(skip_locked=True)
                    )
                )
                # Every borrower of the batch is locked first, in id order: two sweepers (or a
                # sweeper and intake) then never wait for each other in a cycle.
                lock_borrowers(session, [r.borrower_id for r in records])
                for record in records:
                    self.clear(session, record, reason, now, account_ref=self.account_ref(record))
                cleared += len(records)
            if len(records) < batch:
                return cleared

    def _expire_certificates(
        self, sessions: sessionmaker[Session], now: dt.datetime, batch: int
    ) -> int:
        expired = 0
        while True:
            with sessions() as session, session.begin():
                rows = list(
                    session.scalars(
                        select(ClearanceCertificate)
                        .where(ClearanceCertificate.expires_at <= now)
                        .limit(batch)
                        .with_for_update(skip_locked=True)
                    )
                )
                for row in rows:
                    key_id = row.data_key_id
                    session.delete(row)
                    session.flush()
                    session.execute(delete(DataKey).where(DataKey.id == key_id))
                expired += len(rows)
            if len(rows) < batch:
                return expired
