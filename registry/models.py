"""The registry's rows, named after the domain (SQLAlchemy 2.0 typed ORM).

Personal data is never stored in the clear: columns ending in ``_ct`` hold AES-GCM ciphertext
under the row's own data key (``DataKey``), and look-ups go through blind indexes (``*_index``).
Destroying a ``DataKey`` makes every ciphertext under it unrecoverable (crypto-shredding).
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Money(TypeDecorator[Decimal]):
    """Money as an exact integer count of cents: no engine ever sees a float."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        cents = value * 100
        if cents != cents.to_integral_value():
            raise ValueError("money has at most two decimal places")
        return int(cents)

    def process_result_value(self, value: int | None, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return (Decimal(value) / 100).quantize(Decimal("0.01"))


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timestamps are UTC and timezone-aware on the way out, whatever the engine stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class MemberStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Institution(Base):
    """A member: a bank, card issuer or online lender admitted by the operator."""

    __tablename__ = "institutions"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=MemberStatus.ACTIVE.value)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    suspended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)

    keys: Mapped[list[MemberKey]] = relationship(back_populates="institution")

    @property
    def is_active(self) -> bool:
        return self.status == MemberStatus.ACTIVE.value


class MemberKey(Base):
    """An Ed25519 public key of a member, valid in ``[not_before, not_after)`` until revoked."""

    __tablename__ = "member_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    keyid: Mapped[str] = mapped_column(String(64), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    institution: Mapped[Institution] = relationship(back_populates="keys")

    def state_at(self, when: dt.datetime) -> str:
        """``valid``, ``not_yet_valid``, ``expired`` or ``revoked`` at the given instant."""
        if self.revoked_at is not None and when >= self.revoked_at:
            return "revoked"
        if when < self.not_before:
            return "not_yet_valid"
        if self.not_after is not None and when >= self.not_after:
            return "expired"
        return "valid"


class RequestNonce(Base):
    """A request-signature nonce, remembered for the replay window by every worker.

    On SQLite the rows live in their primary key (``WITHOUT ROWID``, migration 0012): every
    signed request writes one, and that is one B-tree fewer to change.
    """

    __tablename__ = "request_nonces"
    __table_args__ = ({"sqlite_with_rowid": False},)

    keyid: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class DataKey(Base):
    """A per-record AES-256 key, stored only wrapped by a master key version.

    ``ref`` here, on borrowers, records and clearance certificates is a random name that binds
    a ciphertext or a wrapped key to its row (associated data). Rows are found by id or blind
    index, a record by its ref only within its borrower's file (``statements.own_record``), so
    none of these four refs has an index (0010): one would cost a random page per insert and
    per delete. Refs that callers look up (disputes, consents, ...) keep theirs.
    """

    __tablename__ = "data_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32))
    master_version: Mapped[int] = mapped_column(Integer)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


def data_key_reference() -> ForeignKey:
    """A column's reference to its data key: a foreign key ``ON DELETE RESTRICT`` (0007).

    Destroying a key that a row still uses is refused, and no row may name a key that does
    not exist. On SQLite this foreign key enforces it. On PostgreSQL migration 0009 replaced
    the eight foreign keys to ``data_keys`` by triggers that check a whole statement at once
    (a cleared record's two keys had fired sixteen per-row checks), with the same guarantee
    and error class; the database there has no such constraint, so ``alembic revision
    --autogenerate`` on PostgreSQL proposes them again: leave them out.
    """
    return ForeignKey("data_keys.id", ondelete="RESTRICT")


class Borrower(Base):
    """A person with at least one record, known to the registry only by blind index."""

    __tablename__ = "borrowers"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32))
    id_index: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    data_key_id: Mapped[int] = mapped_column(data_key_reference(), index=True)
    national_id_ct: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    data_key: Mapped[DataKey] = relationship()


class Delinquency(Base):
    """One overdue account at one member: ``(institution, account_ref)``, its current state."""

    __tablename__ = "delinquencies"
    __table_args__ = (UniqueConstraint("institution_id", "account_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    account_index: Mapped[bytes] = mapped_column(LargeBinary(32))
    # RESTRICT, not NO ACTION: see data_key_reference (migration 0007).
    borrower_id: Mapped[int] = mapped_column(
        ForeignKey("borrowers.id", ondelete="RESTRICT"), index=True
    )
    data_key_id: Mapped[int] = mapped_column(data_key_reference(), index=True)
    account_ref_ct: Mapped[bytes] = mapped_column(LargeBinary)
    name_ct: Mapped[bytes] = mapped_column(LargeBinary)
    phone_ct: Mapped[bytes] = mapped_column(LargeBinary)
    address_ct: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    product: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    overdue_principal: Mapped[Decimal] = mapped_column(Money())
    overdue_interest: Mapped[Decimal] = mapped_column(Money())
    penalty: Mapped[Decimal] = mapped_column(Money())
    days_past_due: Mapped[int] = mapped_column(Integer)
    first_delinquency_date: Mapped[dt.date]
    as_of_date: Mapped[dt.date]
    contact_status: Mapped[str] = mapped_column(String(16))
    lost_contact_since: Mapped[dt.date | None] = mapped_column(default=None)
    channels_tried: Mapped[str] = mapped_column(String(200), default="")
    collection_stage: Mapped[str] = mapped_column(String(32))
    classification: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open")
    settled_on: Mapped[dt.date | None] = mapped_column(default=None)
    settlement_type: Mapped[str | None] = mapped_column(String(16), default=None)
    # Set when a dispute went unanswered past its deadline: the record is hidden from every
    # inquiry (but not from the borrower) until the member answers.
    suppressed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    sequence: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    institution: Mapped[Institution] = relationship()
    borrower: Mapped[Borrower] = relationship()
    data_key: Mapped[DataKey] = relationship()
    reports: Mapped[list[Report]] = relationship(
        back_populates="delinquency", cascade="all, delete-orphan", passive_deletes=True
    )


class Report(Base):
    """An accepted signed report: the envelope as evidence and the receipt given for it.

    ``id`` is the registry-wide acceptance sequence quoted in receipts (``log_index``), never
    given twice even when reports are deleted. A report that cleared
    its record keeps only its idempotency facts (report id, envelope digest, receipt) with no
    record and no envelope, so a resend whose first answer was lost gets the same receipt; the
    sweeper deletes such rows after the policy's maximum age, with the tombstones' indexes.
    """

    __tablename__ = "reports"
    # SQLite: AUTOINCREMENT keeps the largest id ever given (0011), so deleting the newest
    # report never lets its number be given again.
    __table_args__ = (
        UniqueConstraint("institution_id", "report_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    report_id: Mapped[str] = mapped_column(String(64))
    delinquency_id: Mapped[int | None] = mapped_column(
        ForeignKey("delinquencies.id", ondelete="CASCADE"), index=True
    )
    sequence: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    envelope_ct: Mapped[bytes] = mapped_column(LargeBinary)
    receipt: Mapped[bytes] = mapped_column(LargeBinary)
    accepted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    delinquency: Mapped[Delinquency | None] = relationship(back_populates="reports")


class ComplianceViolation(Base):
    """A refused report that broke a charging cap, counted per member for the operator.

    Holds no personal data and no part of the refused report beyond the rule it broke.
    """

    __tablename__ = "compliance_violations"

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    rule: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Tombstone(Base):
    """What is left of a cleared record: who, why, when, and the last sequence it reached.

    No personal data. ``account_index`` is the keyed blind index of the account (a pseudonym
    only the registry's secret can reproduce); it lets the registry refuse a late or replayed
    report that would otherwise bring the record back, and is erased by the sweeper once the
    policy's maximum age has passed.
    """

    __tablename__ = "tombstones"

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    account_index: Mapped[bytes | None] = mapped_column(LargeBinary(32), index=True)
    last_sequence: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    cleared_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class ClearanceCertificate(Base):
    """A registry-signed certificate that a record was cleared, kept for the borrower a while.

    Found by the borrower's blind index; the signed certificate is encrypted under its own data
    key, destroyed with the row when the certificate expires.
    """

    __tablename__ = "clearance_certificates"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32))
    borrower_index: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    data_key_id: Mapped[int] = mapped_column(data_key_reference(), index=True)
    certificate_ct: Mapped[bytes] = mapped_column(LargeBinary)
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)

    data_key: Mapped[DataKey] = relationship()


class Operator(Base):
    """Registry staff or a regulator, who signs operator API requests with an Ed25519 key.

    Operators are registered only from the command line on the registry host (``registry
    operators add``): no HTTP endpoint can create one.
    """

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    keyid: Mapped[str] = mapped_column(String(64), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class Consent(Base):
    """A borrower's permission for one member to look at their file, for one purpose.

    Two kinds: a consent code the borrower issued (stored only as a keyed hash; the code itself
    is shown once to the borrower), or a written authorization the member attests to (its
    reference, the SHA-256 of the signed form and its date). Found by the borrower's blind index.
    """

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    borrower_index: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    code_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True, default=None)
    reference: Mapped[str | None] = mapped_column(String(64), default=None)
    form_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    signed_on: Mapped[dt.date | None] = mapped_column(default=None)
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)

    institution: Mapped[Institution] = relationship()

    def is_live(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


class Inquiry(Base):
    """One look (or refused attempt to look) at a borrower's file by a member.

    Kept with the signed request as evidence (encrypted under the inquiry's own data key: the
    body holds the national ID). ``borrower_index`` is None only for an attempt whose national
    ID was not even valid. The borrower sees the answered ones; the operator sees all.
    """

    __tablename__ = "inquiries"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    borrower_index: Mapped[bytes | None] = mapped_column(LargeBinary(32), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    consent_kind: Mapped[str] = mapped_column(String(32))
    consent_reference: Mapped[str | None] = mapped_column(String(64), default=None)
    consent_id: Mapped[int | None] = mapped_column(
        ForeignKey("consents.id", ondelete="SET NULL"), index=True, default=None
    )
    outcome: Mapped[str] = mapped_column(String(16))
    refusal_code: Mapped[str | None] = mapped_column(String(64), default=None)
    data_key_id: Mapped[int | None] = mapped_column(data_key_reference(), index=True, default=None)
    request_ct: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)

    institution: Mapped[Institution] = relationship()
    data_key: Mapped[DataKey | None] = relationship()


class QuotaUsage(Base):
    """How many inquiries a member made on one UTC day: one row, updated atomically.

    In the database (not in a worker's memory) so that every worker and host counts together.
    """

    __tablename__ = "quota_usage"
    __table_args__ = (UniqueConstraint("institution_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    day: Mapped[dt.date]
    used: Mapped[int] = mapped_column(Integer, default=0)


class Dispute(Base):
    """A borrower's objection to one record, which the reporting member must answer in time.

    Deleted with its record when the record is cleared. The free text is encrypted under the
    dispute's own data key.
    """

    __tablename__ = "disputes"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    delinquency_id: Mapped[int] = mapped_column(
        ForeignKey("delinquencies.id", ondelete="CASCADE"), index=True
    )
    borrower_index: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    reason: Mapped[str] = mapped_column(String(32))
    data_key_id: Mapped[int] = mapped_column(data_key_reference(), index=True)
    text_ct: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    status: Mapped[str] = mapped_column(String(16), default="open")
    answer: Mapped[str | None] = mapped_column(String(16), default=None)
    answer_note_ct: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    filed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)

    delinquency: Mapped[Delinquency] = relationship()
    data_key: Mapped[DataKey] = relationship()

    @property
    def is_open(self) -> bool:
        return self.status == "open"


class BorrowerStatement(Base):
    """The borrower's own statement (本人声明), on the whole file or on one record.

    Shown to every inquirer beside what it is attached to; encrypted under its own data key.
    """

    __tablename__ = "borrower_statements"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    borrower_index: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    delinquency_id: Mapped[int | None] = mapped_column(
        ForeignKey("delinquencies.id", ondelete="CASCADE"), index=True, default=None
    )
    data_key_id: Mapped[int] = mapped_column(data_key_reference(), index=True)
    text_ct: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    data_key: Mapped[DataKey] = relationship()


# --- early warning (issue 8): webhooks, subscriptions, alerts and their delivery outbox -------


class Webhook(Base):
    """The HTTPS URL a member registered to receive its alerts, signed by the registry."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Subscription(Base):
    """A member watching one borrower it has a relationship with, until it or the tie ends.

    The borrower is known by blind index; the masked ID (``110101********1234``) is kept in
    the clear so that lists and alerts never need the full number. At most one live
    subscription per member and borrower (a partial unique index on both engines).
    """

    __tablename__ = "subscriptions"
    __table_args__ = (
        Index(
            "uq_subscriptions_live",
            "institution_id",
            "borrower_index",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    borrower_index: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    national_id_masked: Mapped[str] = mapped_column(String(18))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    end_reason: Mapped[str | None] = mapped_column(String(32), default=None)

    @property
    def is_live(self) -> bool:
        return self.ended_at is None


class AlertStream(Base):
    """A member's alert counter: the row lock taken to bump it orders alerts by commit.

    Without it, two reports committing out of id order on PostgreSQL could let a member's
    cursor skip past an alert that became visible a moment later. It is bumped only as the
    writing transaction commits, so the lock is held for an instant.
    """

    __tablename__ = "alert_streams"

    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)


class Alert(Base):
    """One early-warning event for one subscribed member: masked data and references only.

    ``body`` is the exact JSON document delivered (webhook) and served (pull API), so every
    redelivery carries the same bytes and the same ``event_id``. Deleted with its record when
    the record is cleared: a cleared debt is not announced afterwards.
    """

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("institution_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    # Numbered when the writing transaction commits (``registry.alerts.number``).
    seq: Mapped[int | None] = mapped_column(Integer, default=None)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True
    )
    delinquency_id: Mapped[int] = mapped_column(
        ForeignKey("delinquencies.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)

    delivery: Mapped[AlertDelivery | None] = relationship(
        back_populates="alert", uselist=False, passive_deletes=True
    )


class AlertDelivery(Base):
    """The outbox row of one alert's webhook delivery, drained by ``registry worker``.

    ``state``: ``pending`` (due at ``next_attempt_at``), ``delivered``, ``dead`` (gave up
    after the policy's attempts) or ``cancelled`` (the member removed its webhook). ``claim``
    names the worker run holding it; an expired claim is simply due again (at-least-once).
    """

    __tablename__ = "alert_deliveries"
    __table_args__ = (Index("ix_alert_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), unique=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    claim: Mapped[str | None] = mapped_column(String(32), default=None)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(64), default=None)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    dead_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)

    alert: Mapped[Alert] = relationship(back_populates="delivery")


# --- borrower self-service (issue 5): notification outbox, sign-in, sessions, enrolment -------


class Notification(Base):
    """One message in the outbox, to a borrower's phone or to a member.

    A borrower's message (destination phone and text, which may hold a sign-in code) is sealed
    in ``message_ct`` under the row's own data key, destroyed as soon as the message is sent,
    given up or expired; the row itself goes after a short retention. A member's message holds
    references and dates only (no personal data) and is kept as plain JSON in ``message``.
    ``state``: ``pending``, ``sent``, ``failed``, ``no_destination``.
    """

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    audience: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(32))
    institution_id: Mapped[int | None] = mapped_column(
        ForeignKey("institutions.id"), index=True, default=None
    )
    data_key_id: Mapped[int | None] = mapped_column(data_key_reference(), index=True, default=None)
    message_ct: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    message: Mapped[str | None] = mapped_column(String(4000), default=None)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)

    data_key: Mapped[DataKey | None] = relationship()


class SigninCode(Base):
    """A one-time sign-in code (SMS) or enrolment code (operator), stored only as a keyed hash.

    ``attempts`` counts wrong guesses while the code was live; at the limit the code is dead.
    """

    __tablename__ = "signin_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    borrower_index: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    spent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class SigninCounter(Base):
    """A fixed-window counter for sign-in rate limits, shared by every worker and host.

    ``subject`` is a keyed hash (of the borrower's blind index or the client's address), so
    the table holds neither IDs nor IP addresses.
    """

    __tablename__ = "signin_counters"
    __table_args__ = (UniqueConstraint("scope", "subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(32))
    subject: Mapped[bytes] = mapped_column(LargeBinary(32))
    window_start: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class BorrowerSession(Base):
    """A signed-in borrower: a browser cookie or an API bearer token, kept only as a hash."""

    __tablename__ = "borrower_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    borrower_index: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class BorrowerEnrolment(Base):
    """A borrower the operator identified in person, with the phone they gave (if any).

    The phone is sealed under the row's own data key; it takes precedence over the phones
    members reported, because the borrower confirmed it themselves.
    """

    __tablename__ = "borrower_enrolments"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    borrower_index: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    data_key_id: Mapped[int] = mapped_column(data_key_reference(), index=True)
    phone_ct: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    enrolled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    data_key: Mapped[DataKey] = relationship()


class SweepTotal(Base):
    """Running totals of the scheduled sweeps, by rule, kept in the database.

    The sweeper runs in ``registry worker``, often on another host than the web tier, so its
    counts cannot live in a web process's metrics; ``/metrics`` reads them from here. No
    personal data: a rule's name and numbers.
    """

    __tablename__ = "sweep_totals"

    rule: Mapped[str] = mapped_column(String(32), primary_key=True)
    cleared: Mapped[int] = mapped_column(BigInteger)
    sweeps: Mapped[int] = mapped_column(BigInteger)
    last_finished_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
