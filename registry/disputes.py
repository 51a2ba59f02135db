"""Disputes: a borrower objects to a record; the reporting member must answer before a deadline.

The state model (docs/disputes.md has the full table and the bureau codes it follows):

- ``open``: filed and awaiting the member (Metro 2 ``XB``, the PBOC objection mark 异议标注);
  inquirers see the record "under dispute".
- ``answered`` with ``answer``:
  ``confirm`` (the member verified the data and says why, Metro 2 ``XC``: closed, the
  borrower may still disagree, and can say so in a statement), or ``correct`` (an accepted
  ``correct`` report on the record answered it, Metro 2 ``XH``). A ``withdraw`` answer clears
  the record, and the dispute goes with it.
- ``expired``: unanswered at ``due_at``; the sweeper suppresses the record from every
  inquiry. Any later answer lifts the suppression (like the FCRA's reinsertion after
  certification) and the borrower is told.

At most one unanswered (``open`` or ``expired``) dispute per record. A record's row is the
mutex for its disputes: every path here locks it before touching them, in the same order as
intake and clearing, so they never deadlock. Functions taking a ``Session`` do not commit;
``expire_overdue`` runs its own transactions.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Collection
from typing import Any, Literal

from sqlalchemy import ColumnElement, Exists, and_, exists, or_, select
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker

from registry import notify, paging
from registry.clearing import Clearer, ClearReason
from registry.errors import Conflict, FieldError, NotFound, ValidationFailed
from registry.masking import mask_account_ref
from registry.models import Delinquency, Dispute
from registry.policy import DEFAULT_POLICY, Policy
from registry.secrets import KeyMaterial
from registry.statements import clean_text, is_ref, own_record, timestamp
from registry.vault import Vault

REASONS = (
    "not_mine",
    "identity_theft",
    "already_paid",
    "wrong_amount",
    "wrong_dates",
    "wrong_status",
    "other",
)
ANSWERS = ("confirm", "correct", "withdraw")
OPEN, ANSWERED, EXPIRED = "open", "answered", "expired"
STATUSES = (OPEN, ANSWERED, EXPIRED)
UNANSWERED = (OPEN, EXPIRED)
MAX_TEXT = 1000
MAX_NOTE = 1000
TABLE = "disputes"

Answer = Literal["confirm", "correct", "withdraw"]


def _one_of(field: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        message = f"must be one of: {', '.join(allowed)}"
        raise ValidationFailed(f"{field} {message}", errors=[FieldError(field, "one_of", message)])
    return value


def _checked(first: Callable[[], object], text: Callable[[], str | None]) -> str | None:
    """Run both checks and report every broken rule at once; returns the cleaned text."""
    errors: list[FieldError] = []
    cleaned: str | None = None
    try:
        first()
    except ValidationFailed as exc:
        errors += exc.errors
    try:
        cleaned = text()
    except ValidationFailed as exc:
        errors += exc.errors
    if len(errors) > 1:
        raise ValidationFailed("the request breaks the rules listed in errors", errors=errors)
    if errors:
        raise ValidationFailed(f"{errors[0].field} {errors[0].message}", errors=errors)
    return cleaned


def _pending(session: Session, record_id: int) -> list[Dispute]:
    """The record's unanswered disputes, re-read (the caller holds the record's lock)."""
    return list(
        session.scalars(
            select(Dispute)
            .where(Dispute.delinquency_id == record_id, Dispute.status.in_(UNANSWERED))
            .execution_options(populate_existing=True)
        )
    )


def file_dispute(
    session: Session,
    material: KeyMaterial,
    policy: Policy,
    *,
    borrower_index: bytes,
    record_ref: str,
    reason: str,
    text: str,
    now: dt.datetime,
) -> Dispute:
    """File the borrower's dispute on one of their records; the member has until ``due_at``.

    Another person's record is ``NotFound`` exactly like a missing one. The free text is
    encrypted under the dispute's own data key.
    """
    clean = _checked(
        lambda: _one_of("reason", reason, REASONS),
        lambda: clean_text(
            text, field="text", max_length=MAX_TEXT, required=reason == "other", newlines=True
        ),
    )
    record = own_record(session, borrower_index, record_ref, lock=True)
    pending = _pending(session, record.id)
    if pending:
        raise Conflict(
            "this record already has a dispute awaiting the member's answer",
            code="dispute_already_open",
            extra={"dispute_ref": pending[0].ref},
        )
    vault = Vault(material.keyring)
    data_key, key = vault.new_key(session, now)
    ref = secrets.token_hex(16)
    dispute = Dispute(
        ref=ref,
        delinquency=record,
        borrower_index=borrower_index,
        reason=reason,
        data_key=data_key,
        text_ct=vault.seal(key, TABLE, "text", ref, clean.encode()) if clean else None,
        status=OPEN,
        filed_at=now,
        due_at=now + dt.timedelta(days=policy.dispute_response_days),
    )
    session.add(dispute)
    session.flush()
    due = timestamp(dispute.due_at) or ""
    notify.to_member(
        session,
        institution_id=record.institution_id,
        template="dispute_filed",
        params={"dispute": ref, "record": record.ref, "due": due},
        now=now,
    )
    notify.to_borrower(
        session,
        material,
        borrower_index=borrower_index,
        template="dispute_filed",
        params={"record": _label(vault, record), "due": due},
        now=now,
    )
    return dispute


def _account_ref(vault: Vault, record: Delinquency) -> str:
    key = vault.open_key(record.data_key)
    return vault.unseal(
        key, "delinquencies", "account_ref", record.ref, record.account_ref_ct
    ).decode()


def _label(vault: Vault, record: Delinquency) -> str:
    """How a message names a record to the borrower: member code and masked account.

    NOTE: a text message can be read on a lock screen; the last four characters are enough
    for the borrower to recognise the account (as on the clearance certificate).
    """
    return f"{record.institution.code} {mask_account_ref(_account_ref(vault, record))}"


def _plain(vault: Vault, dispute: Dispute, column: str, blob: bytes | None) -> str | None:
    if blob is None:
        return None
    key = vault.open_key(dispute.data_key)
    return vault.unseal(key, TABLE, column, dispute.ref, blob).decode()


def _common(vault: Vault, dispute: Dispute, record: Delinquency) -> dict[str, Any]:
    return {
        "ref": dispute.ref,
        "record_id": record.ref,
        "reason": dispute.reason,
        "text": _plain(vault, dispute, "text", dispute.text_ct),
        "status": dispute.status,
        "answer": dispute.answer,
        "answer_note": _plain(vault, dispute, "answer_note", dispute.answer_note_ct),
        "filed_at": timestamp(dispute.filed_at),
        "due_at": timestamp(dispute.due_at),
        "answered_at": timestamp(dispute.answered_at),
    }


def list_for_borrower(
    session: Session, material: KeyMaterial, borrower_index: bytes
) -> list[dict[str, Any]]:
    """Every dispute the borrower filed on a record that still exists, newest first."""
    vault = Vault(material.keyring)
    rows = session.execute(
        select(Dispute, Delinquency)
        .join(Delinquency, Delinquency.id == Dispute.delinquency_id)
        .where(Dispute.borrower_index == borrower_index)
        .order_by(Dispute.filed_at.desc(), Dispute.id.desc())
    ).all()
    return [{**_common(vault, d, r), "institution": r.institution.code} for d, r in rows]


def _for_member(vault: Vault, dispute: Dispute, record: Delinquency) -> dict[str, Any]:
    """What the reporting member sees: its own record in full, never the contact data."""
    return {
        **_common(vault, dispute, record),
        "account_ref": _account_ref(vault, record),
        "suppressed": record.suppressed_at is not None,
    }


def _member_query(institution_id: int) -> Any:
    return (
        select(Dispute, Delinquency)
        .join(Delinquency, Delinquency.id == Dispute.delinquency_id)
        .where(Delinquency.institution_id == institution_id)
    )


def list_for_member(
    session: Session,
    material: KeyMaterial,
    institution_id: int,
    *,
    status: str | None = None,
    after: str | None = None,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """A page of the disputes on the member's own records, the most urgent (earliest
    ``due_at``) first, and the cursor of the next page.

    The cursor names the last dispute's due time and id: a dispute answered, expired or
    cleared between two pages moves no other out of its place.
    """
    (due_us, last_id), size = paging.decode_cursor(after, 2), paging.check_limit(limit)
    query = _member_query(institution_id)
    if status is not None:
        query = query.where(Dispute.status == _one_of("status", status, STATUSES))
    if after:
        due = _EPOCH + dt.timedelta(microseconds=due_us)
        query = query.where(
            or_(Dispute.due_at > due, and_(Dispute.due_at == due, Dispute.id > last_id))
        )
    vault = Vault(material.keyring)
    rows = session.execute(query.order_by(Dispute.due_at, Dispute.id).limit(size)).all()
    if not rows:
        return [], after or paging.encode_cursor(0, 0)
    last = rows[-1][0]
    cursor = paging.encode_cursor((last.due_at - _EPOCH) // dt.timedelta(microseconds=1), last.id)
    return [_for_member(vault, d, r) for d, r in rows], cursor


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def get_for_member(
    session: Session, material: KeyMaterial, institution_id: int, dispute_ref: str
) -> dict[str, Any]:
    """One dispute on the member's own records; another member's is ``NotFound``."""
    if not is_ref(dispute_ref):
        raise _not_found()
    row = session.execute(_member_query(institution_id).where(Dispute.ref == dispute_ref)).first()
    if row is None:
        raise _not_found()
    return _for_member(Vault(material.keyring), row[0], row[1])


def _not_found() -> NotFound:
    return NotFound("no such dispute on your records", code="dispute_not_found")


def answer(
    session: Session,
    material: KeyMaterial,
    *,
    institution_id: int,
    dispute_ref: str,
    answer: Answer,
    note: str | None,
    now: dt.datetime,
    policy: Policy | None = None,
) -> Dispute:
    """The member's answer to an unanswered dispute on its own record.

    ``confirm`` needs a note saying what was verified. ``withdraw`` clears the record (reason
    ``reported_in_error``) and the dispute row goes with it; the borrower is told first.
    ``correct`` is not an answer given here: the member sends a ``correct`` report, whose
    acceptance answers the dispute (``on_member_report``), so the correction itself is the
    signed evidence. Any answer lifts a suppression.
    """
    clean_note = _checked(
        lambda: _one_of("answer", answer, ANSWERS),
        lambda: clean_text(
            note, field="note", max_length=MAX_NOTE, required=answer == "confirm", newlines=True
        ),
    )
    if answer == "correct":
        raise ValidationFailed(
            "a correction is answered by sending a correct report",
            errors=[
                FieldError(
                    "answer",
                    "correct_by_report",
                    "send a report of kind correct (POST /v1/reports, next sequence): its "
                    "acceptance answers the dispute",
                )
            ],
        )
    if not is_ref(dispute_ref):
        raise _not_found()
    found = session.execute(_member_query(institution_id).where(Dispute.ref == dispute_ref)).first()
    if found is None:
        raise _not_found()
    # The record's lock first (the order intake and clearing use), then the dispute re-read
    # under it: a concurrent answer, correction or sweep has either finished or waits.
    record = session.scalar(
        select(Delinquency)
        .where(Delinquency.id == found[1].id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if record is None:
        raise _not_found()
    dispute = next((d for d in _pending(session, record.id) if d.ref == dispute_ref), None)
    if dispute is None:
        raise Conflict("this dispute has already been answered", code="dispute_already_answered")
    vault = Vault(material.keyring)
    dispute.status = ANSWERED
    dispute.answer = answer
    dispute.answered_at = now
    record.suppressed_at = None
    if clean_note is not None:
        key = vault.open_key(dispute.data_key)
        dispute.answer_note_ct = vault.seal(
            key, TABLE, "answer_note", dispute.ref, clean_note.encode()
        )
    notify.to_borrower(
        session,
        material,
        borrower_index=dispute.borrower_index,
        template="dispute_answered",
        params={"record": _label(vault, record), "answer": answer},
        now=now,
    )
    if answer == "withdraw":
        # NOTE: after the borrower's message is queued: it needs the record (the phone on it).
        Clearer(material, policy or DEFAULT_POLICY).clear(
            session,
            record,
            ClearReason.REPORTED_IN_ERROR,
            now,
            account_ref=_account_ref(vault, record),
        )
    session.flush()
    return dispute


def on_member_report(
    session: Session, material: KeyMaterial, record: Delinquency, kind: str, now: dt.datetime
) -> int:
    """Intake's hook after a report's state is written: a ``correct`` report answers the
    record's unanswered disputes (and lifts a suppression). Returns how many it answered.

    Intake holds the record's lock. An ``update`` is not an answer: the member may be
    reporting a new balance without having looked at the dispute.
    """
    if kind != "correct":
        return 0
    pending = _pending(session, record.id)
    if not pending:
        return 0
    record.suppressed_at = None
    label = _label(Vault(material.keyring), record)
    for dispute in pending:
        dispute.status = ANSWERED
        dispute.answer = "correct"
        dispute.answered_at = now
        notify.to_borrower(
            session,
            material,
            borrower_index=dispute.borrower_index,
            template="dispute_answered",
            params={"record": label, "answer": "correct"},
            now=now,
        )
    return len(pending)


def expire_overdue(
    sessions: sessionmaker[Session], material: KeyMaterial, now: dt.datetime, *, batch: int = 500
) -> int:
    """The sweeper's rule: unanswered past ``due_at`` -> ``expired``, the record suppressed.

    Idempotent, and safe to run twice at once: each batch locks its records with SKIP LOCKED
    (on SQLite, writers are serialised) and re-reads the disputes under the lock.
    """
    overdue = select(Dispute.delinquency_id).where(Dispute.status == OPEN, Dispute.due_at <= now)
    expired = 0
    while True:
        with sessions() as session, session.begin():
            records = list(
                session.scalars(
                    select(Delinquency)
                    .where(Delinquency.id.in_(overdue))
                    .order_by(Delinquency.id)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            )
            for record in records:
                expired += _expire(session, material, record, now)
        if len(records) < batch:
            return expired


def _expire(session: Session, material: KeyMaterial, record: Delinquency, now: dt.datetime) -> int:
    due = [d for d in _pending(session, record.id) if d.status == OPEN and d.due_at <= now]
    if due and record.suppressed_at is None:
        record.suppressed_at = now
    label = _label(Vault(material.keyring), record) if due else ""
    for dispute in due:
        dispute.status = EXPIRED
        notify.to_member(
            session,
            institution_id=record.institution_id,
            template="dispute_expired",
            params={"dispute": dispute.ref, "record": record.ref},
            now=now,
        )
        notify.to_borrower(
            session,
            material,
            borrower_index=dispute.borrower_index,
            template="dispute_expired",
            params={"record": label},
            now=now,
        )
    return len(due)


def under_dispute(record_id: ColumnElement[int] | QueryableAttribute[int]) -> Exists:
    """The rule of ``open_dispute_record_ids`` as an SQL condition on one record's id.

    For a caller that reads the records anyway: the flag comes with each row. Equalities
    rather than ``IN``: an ``IN`` list is expanded into the SQL text at every execution.
    """
    unanswered = or_(*(Dispute.status == status for status in UNANSWERED))
    return exists().where(Dispute.delinquency_id == record_id, unanswered)


def open_dispute_record_ids(session: Session, record_ids: Collection[int]) -> set[int]:
    """Which of ``record_ids`` are "under dispute" for inquirers: an unanswered dispute.

    An ``expired`` one counts too (its record is normally suppressed, so not shown at all).
    """
    if not record_ids:
        return set()
    return set(
        session.scalars(
            select(Dispute.delinquency_id).where(
                Dispute.delinquency_id.in_(list(record_ids)), Dispute.status.in_(UNANSWERED)
            )
        )
    )
