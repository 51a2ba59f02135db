"""Early warning (DOMAIN.md fact 6): subscriptions, the alerts they produce, the pull cursor.

A member subscribes to a borrower it has a relationship with (its own record or a live consent:
``relationships.has_relationship``, the same test ``account_review`` inquiries use). When
another member's report opens a delinquency on that borrower, or turns a record lost-contact,
legal-action or a worse classification, an alert is written for each subscriber in the same
transaction as the report, together with its webhook outbox row (``AlertDelivery``) when the
subscriber registered a webhook; ``registry.webhooks`` delivers them.

An alert carries masked data and references only (never a name, phone, amount or another
member's account reference); the member follows up with an ``account_review`` inquiry, which
is logged like any other. Subscriptions end when the relationship does: checked whenever an
alert is about to be written or a member lists its subscriptions, and by the sweeper.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Exists, bindparam, delete, event, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from registry import national_id as nid
from registry import payload as p
from registry.classification import ORDER, Tier
from registry.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from registry.models import (
    Alert,
    AlertDelivery,
    AlertStream,
    Delinquency,
    Institution,
    Subscription,
    Webhook,
)
from registry.paging import check_limit, decode_cursor, encode_cursor
from registry.policy import Policy
from registry.relationships import has_relationship
from registry.secrets import KeyMaterial

ALERT_VERSION = 1

# Built once: every report of an update runs the first, every report the second.
_STATE_FOR_UPDATE = (
    select(Delinquency.contact_status, Delinquency.collection_stage, Delinquency.classification)
    .where(
        Delinquency.institution_id == bindparam("institution_id"),
        Delinquency.account_index == bindparam("account_index"),
    )
    .with_for_update()
)


def _watching(
    borrower_index: ColumnElement[bytes] | bytes, reporter_id: ColumnElement[int] | int
) -> tuple[ColumnElement[bool], ...]:
    """The live subscriptions of members other than the reporter to the borrower."""
    return (
        Subscription.borrower_index == borrower_index,
        Subscription.ended_at.is_(None),
        Subscription.institution_id != reporter_id,
    )


def someone_else_watches(
    borrower_index: ColumnElement[bytes], reporter_id: ColumnElement[int]
) -> Exists:
    """Whether another member has a live subscription to the borrower: the probe
    :func:`on_report` makes before anything else (intake folds it into its own look-up)."""
    return exists().where(*_watching(borrower_index, reporter_id))


_ANY_WATCHER = select(someone_else_watches(bindparam("borrower_index"), bindparam("reporter_id")))


class AlertType(enum.StrEnum):
    NEW_DELINQUENCY_ELSEWHERE = "new_delinquency_elsewhere"
    LOST_CONTACT = "lost_contact"
    LEGAL_ACTION = "legal_action"
    CLASSIFICATION_WORSENED = "classification_worsened"


class EndReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    RELATIONSHIP_ENDED = "relationship_ended"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    CANCELLED = "cancelled"


def _utc(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- subscriptions -------------------------------------------------------------------------


def _borrower_index(material: KeyMaterial, national_id: str) -> tuple[bytes, str]:
    try:
        normalized = nid.validate(national_id)
    except nid.InvalidNationalId as exc:
        raise ValidationFailed(
            "the national ID is not valid",
            errors=[FieldError("national_id", exc.rule, exc.message)],
        ) from None
    return material.blind_index.digest("national_id", normalized), nid.mask(normalized)


def subscribe(
    session: Session,
    material: KeyMaterial,
    member: Institution,
    national_id: str,
    now: dt.datetime,
) -> tuple[Subscription, bool]:
    """Start watching a borrower; returns the live subscription and whether it is new.

    Refused (403 ``no_relationship``) unless the member holds a record on the borrower or a
    live consent from them: the answer depends only on what the member itself holds, so it
    reveals nothing about other members' records.
    """
    index, masked = _borrower_index(material, national_id)
    if not has_relationship(session, member.id, index, now):
        raise Forbidden(
            "the member has no relationship with this borrower (no own record, no live "
            "consent); a subscription needs one",
            code="no_relationship",
        )
    existing = _live_subscription(session, member.id, index)
    if existing is not None:
        return existing, False
    subscription = Subscription(
        ref=secrets.token_hex(16),
        institution_id=member.id,
        borrower_index=index,
        national_id_masked=masked,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(subscription)
    except IntegrityError:
        # A concurrent request of the same member created it first: answer with that one.
        found = _live_subscription(session, member.id, index)
        if found is None:
            raise
        return found, False
    return subscription, True


def _live_subscription(session: Session, member_id: int, index: bytes) -> Subscription | None:
    return session.scalar(
        select(Subscription).where(
            Subscription.institution_id == member_id,
            Subscription.borrower_index == index,
            Subscription.ended_at.is_(None),
        )
    )


def _end(subscription: Subscription, reason: EndReason, now: dt.datetime) -> None:
    subscription.ended_at = now
    subscription.end_reason = reason.value


def _end_if_unrelated(session: Session, subscription: Subscription, now: dt.datetime) -> bool:
    """End a live subscription whose relationship is gone; True when it was ended."""
    if subscription.ended_at is not None:
        return False
    if has_relationship(session, subscription.institution_id, subscription.borrower_index, now):
        return False
    _end(subscription, EndReason.RELATIONSHIP_ENDED, now)
    return True


def get_subscription(
    session: Session, member: Institution, ref: str, now: dt.datetime
) -> Subscription:
    """One of the member's subscriptions; another member's is indistinguishable from none."""
    found = session.scalar(
        select(Subscription).where(
            Subscription.ref == ref, Subscription.institution_id == member.id
        )
    )
    if found is None:
        raise NotFound("no such subscription for this member", code="subscription_not_found")
    _end_if_unrelated(session, found, now)
    return found


def unsubscribe(session: Session, member: Institution, ref: str, now: dt.datetime) -> Subscription:
    """End a subscription (idempotent: an ended one is returned as it is)."""
    found = get_subscription(session, member, ref, now)
    if found.ended_at is None:
        _end(found, EndReason.UNSUBSCRIBED, now)
    return found


def list_subscriptions(
    session: Session,
    member: Institution,
    now: dt.datetime,
    *,
    after: str | None = None,
    limit: int | None = None,
) -> tuple[list[Subscription], str]:
    """A page of the member's subscriptions (oldest first) and the cursor for the next page.

    Live ones whose relationship has ended are ended on the way, so the list never shows a
    subscription as active that would no longer produce alerts.
    """
    [position], size = decode_cursor(after), check_limit(limit)
    rows = list(
        session.scalars(
            select(Subscription)
            .where(Subscription.institution_id == member.id, Subscription.id > position)
            .order_by(Subscription.id)
            .limit(size)
        )
    )
    for row in rows:
        _end_if_unrelated(session, row, now)
    return rows, encode_cursor(rows[-1].id if rows else position)


# --- generating alerts (called by intake, inside the report's transaction) ------------------


@dataclass(frozen=True)
class RecordState:
    """What an alert compares: the record's state before the report changed it."""

    contact_status: str
    collection_stage: str
    classification: str


def capture(
    session: Session, material: KeyMaterial, reporter: Institution, report: p.ReportPayload
) -> RecordState | None:
    """The state an ``update`` or ``correct`` is about to replace (None for other kinds).

    Locks the row as intake is about to (the same transaction then reads the same version),
    so two concurrent updates cannot both compare against the older state.
    """
    if report.kind not in (p.Kind.UPDATE, p.Kind.CORRECT):
        return None
    # NOTE: the account's blind index exactly as intake computes it (member code NUL ref).
    account_index = material.blind_index.digest(
        "account_ref", f"{reporter.code}\x00{report.account_ref}"
    )
    row = session.execute(
        _STATE_FOR_UPDATE, {"institution_id": reporter.id, "account_index": account_index}
    ).first()
    if row is None:
        return None
    return RecordState(contact_status=row[0], collection_stage=row[1], classification=row[2])


def events_for(kind: str, before: RecordState | None, record: Delinquency) -> list[AlertType]:
    """Which alerts a report raises, from the record's state before and after it."""
    if kind == p.Kind.OPEN:
        return [AlertType.NEW_DELINQUENCY_ELSEWHERE]
    if kind not in (p.Kind.UPDATE, p.Kind.CORRECT) or before is None:
        return []
    events = []
    if record.contact_status == "lost_contact" and before.contact_status != "lost_contact":
        events.append(AlertType.LOST_CONTACT)
    if record.collection_stage == "legal_action" and before.collection_stage != "legal_action":
        events.append(AlertType.LEGAL_ACTION)
    if _rank(record.classification) > _rank(before.classification):
        events.append(AlertType.CLASSIFICATION_WORSENED)
    return events


def _rank(classification: str) -> int:
    return ORDER.index(Tier(classification))


def on_report(
    session: Session,
    reporter: Institution,
    kind: str,
    before: RecordState | None,
    record: Delinquency | None,
    now: dt.datetime,
) -> list[Alert]:
    """Write the alerts (and webhook outbox rows) a just-applied report raises.

    Runs inside the report's transaction: the alerts commit with the report or not at all.
    Subscribers are the members other than the reporter (it knows its own report) whose
    subscription is live, who are not suspended, and who still have a relationship with the
    borrower; a subscriber without one has its subscription ended here instead.
    """
    if record is None:
        return []
    events = events_for(kind, before, record)
    if not events:
        return []
    # NOTE: most borrowers have no subscriber. One indexed id probe, without flushing the
    # report's pending rows first (subscriptions are not among them), settles that case; the
    # report's rows are then written by intake's own flush, in one unit of work.
    with session.no_autoflush:
        probe = {"borrower_index": record.borrower.id_index, "reporter_id": reporter.id}
        if not session.scalar(_ANY_WATCHER, probe):
            return []
    watching = _watching(record.borrower.id_index, reporter.id)
    session.flush()  # a just-opened record needs its id before alerts can point at it
    subscriptions = list(
        session.scalars(
            select(Subscription)
            .where(*watching)
            .order_by(Subscription.institution_id, Subscription.id)
        )
    )
    written: list[Alert] = []
    for subscription in subscriptions:
        member = session.get(Institution, subscription.institution_id)
        if member is None or not member.is_active:
            continue
        if _end_if_unrelated(session, subscription, now):
            continue
        webhook = session.scalar(select(Webhook).where(Webhook.institution_id == member.id))
        for alert_type in events:
            alert = _write_alert(session, subscription, reporter, record, alert_type, before, now)
            if webhook is not None:
                session.add(
                    AlertDelivery(
                        alert=alert,
                        institution_id=member.id,
                        state=DeliveryState.PENDING.value,
                        attempts=0,
                        next_attempt_at=now,
                    )
                )
            written.append(alert)
    if written:
        session.flush()
        session.info.setdefault(_UNNUMBERED, []).extend(a.id for a in written)
    return written


def _write_alert(
    session: Session,
    subscription: Subscription,
    reporter: Institution,
    record: Delinquency,
    alert_type: AlertType,
    before: RecordState | None,
    now: dt.datetime,
) -> Alert:
    event_id = secrets.token_hex(16)
    details: dict[str, Any] = {
        "record_id": record.ref,
        "institution": reporter.code,
        "product": record.product,
        "classification": record.classification,
        "contact_status": record.contact_status,
        "collection_stage": record.collection_stage,
    }
    if alert_type is AlertType.CLASSIFICATION_WORSENED and before is not None:
        details["previous_classification"] = before.classification
    document = {
        "version": ALERT_VERSION,
        "event_id": event_id,
        "type": alert_type.value,
        "occurred_at": _utc(now),
        "subscription": subscription.ref,
        "borrower": {"national_id_masked": subscription.national_id_masked},
        "record": details,
    }
    alert = Alert(
        event_id=event_id,
        institution_id=subscription.institution_id,
        subscription_id=subscription.id,
        delinquency_id=record.id,
        type=alert_type.value,
        occurred_at=now,
        body=_dump(document),  # completed with its number when the transaction commits
    )
    session.add(alert)
    return alert


def _dump(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


# --- numbering alerts at commit --------------------------------------------------------------

_UNNUMBERED = "registry.alerts.unnumbered"
_CHUNK = 500


@event.listens_for(Session, "before_commit")
def _number_on_commit(session: Session) -> None:
    """Number the alerts this transaction wrote, as the last thing before it commits.

    A member's counter row is locked from here to the commit, so its alerts become visible in
    ``seq`` order and a pull cursor never skips one that commits a moment later. Taking the
    locks only now, in member order, is what keeps it cheap and deadlock-free: a batch of
    reports would otherwise hold them for the whole batch, taken in report order. A savepoint
    (one report of a batch) leaves the numbering to the outer commit; alerts of a report
    rolled back to its savepoint are gone from the database and are simply not found.
    """
    if session.in_nested_transaction():
        return
    ids: list[int] | None = session.info.pop(_UNNUMBERED, None)
    if ids:
        number(session, ids)


def number(session: Session, ids: Sequence[int]) -> None:
    """Give each unnumbered alert among ``ids`` its member's next ``seq``, in id order."""
    rows: list[Alert] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows += session.scalars(select(Alert).where(Alert.id.in_(chunk), Alert.seq.is_(None))).all()
    rows.sort(key=lambda a: (a.institution_id, a.id))
    for member_id, group in itertools.groupby(rows, key=lambda a: a.institution_id):
        alerts = list(group)
        last = _reserve(session, member_id, len(alerts))
        for seq, alert in enumerate(alerts, start=last - len(alerts) + 1):
            document = json.loads(alert.body)
            document["seq"] = seq
            alert.seq, alert.body = seq, _dump(document)


def _reserve(session: Session, member_id: int, count: int) -> int:
    """Advance the member's counter by ``count``; returns the last number reserved."""
    bump = (
        update(AlertStream)
        .where(AlertStream.institution_id == member_id)
        .values(last_seq=AlertStream.last_seq + count)
        .returning(AlertStream.last_seq)
        .execution_options(synchronize_session=False)
    )
    seq = session.scalar(bump)
    if seq is not None:
        return int(seq)
    try:
        with session.begin_nested():
            session.add(AlertStream(institution_id=member_id, last_seq=count))
        return count
    except IntegrityError:
        seq = session.scalar(bump)
        if seq is None:  # pragma: no cover - the row was just seen to exist
            raise
        return int(seq)


# --- the borrower's side --------------------------------------------------------------------


@dataclass(frozen=True)
class Watcher:
    """A member that watches (or watched) a borrower, for the borrower's own view."""

    institution: str
    since: dt.datetime
    ended_at: dt.datetime | None
    alerts: int


def watchers_of(session: Session, borrower_index: bytes) -> list[Watcher]:
    """Who subscribed to this borrower and how many alerts each received, newest first.

    Monitoring is disclosed to the person monitored, as inquiries are: the borrower portal
    can show it beside the inquiry list.
    """
    counts = (
        select(Alert.subscription_id, func.count().label("n"))
        .group_by(Alert.subscription_id)
        .subquery()
    )
    rows = session.execute(
        select(Institution.code, Subscription.created_at, Subscription.ended_at, counts.c.n)
        .join(Institution, Institution.id == Subscription.institution_id)
        .outerjoin(counts, counts.c.subscription_id == Subscription.id)
        .where(Subscription.borrower_index == borrower_index)
        .order_by(Subscription.created_at.desc(), Subscription.id.desc())
    )
    return [
        Watcher(institution=code, since=since, ended_at=ended, alerts=int(n or 0))
        for code, since, ended, n in rows
    ]


# --- reading alerts (the pull API) ---------------------------------------------------------


def document(alert: Alert) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(alert.body)
    return parsed


def list_alerts(
    session: Session,
    member: Institution,
    *,
    after: str | None = None,
    limit: int | None = None,
    delivery: str | None = None,
) -> tuple[list[Alert], str]:
    """The member's alerts after a cursor, in the order they were committed.

    ``delivery`` filters on the webhook delivery state (e.g. ``dead`` for the dead letters).
    The next cursor is the last alert's position, or the given one when nothing is newer, so
    a poller can always pass back what it received.
    """
    [position], size = decode_cursor(after), check_limit(limit)
    query = (
        select(Alert)
        .where(Alert.institution_id == member.id, Alert.seq > position)
        .options(selectinload(Alert.delivery))
        .order_by(Alert.seq)
        .limit(size)
    )
    if delivery is not None:
        if delivery not in set(DeliveryState):
            raise ValidationFailed(
                "unknown delivery state",
                errors=[
                    FieldError("delivery", "one_of", "must be one of " + ", ".join(DeliveryState))
                ],
            )
        query = query.join(AlertDelivery).where(AlertDelivery.state == delivery)
    rows = list(session.scalars(query))
    last = rows[-1].seq if rows else None
    return rows, encode_cursor(last if last is not None else position)


def get_alert(session: Session, member: Institution, event_id: str) -> Alert:
    found = session.scalar(
        select(Alert)
        .where(Alert.event_id == event_id, Alert.institution_id == member.id)
        .options(selectinload(Alert.delivery))
    )
    if found is None:
        raise NotFound("no such alert for this member", code="alert_not_found")
    return found


def redeliver(session: Session, member: Institution, event_id: str, now: dt.datetime) -> Alert:
    """Queue an alert for webhook delivery again (after a dead letter, or one never pushed).

    The redelivery carries the same body and event id, so a receiver that already has it
    recognises the duplicate.
    """
    alert = get_alert(session, member, event_id)
    if session.scalar(select(Webhook.id).where(Webhook.institution_id == member.id)) is None:
        raise Conflict("register a webhook first (PUT /v1/webhook)", code="webhook_not_set")
    delivery = alert.delivery
    if delivery is None:
        delivery = AlertDelivery(alert=alert, institution_id=member.id, attempts=0)
        session.add(delivery)
    elif delivery.state == DeliveryState.PENDING:
        return alert
    delivery.state = DeliveryState.PENDING.value
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.claim = None
    delivery.dead_at = None
    delivery.last_error = None
    delivery.last_status = None
    return alert


# --- housekeeping (the sweeper) ------------------------------------------------------------


@dataclass
class HousekeepingReport:
    subscriptions_ended: int = 0
    alerts_deleted: int = 0
    subscriptions_deleted: int = 0


def housekeeping(
    sessions: sessionmaker[Session], policy: Policy, now: dt.datetime, *, batch: int = 500
) -> HousekeepingReport:
    """End subscriptions whose relationship is gone; drop alerts past the retention period.

    Idempotent; each batch is its own transaction, so it runs beside intake and other sweeps.
    """
    report = HousekeepingReport()
    position = 0
    while True:
        with sessions() as session, session.begin():
            rows: Sequence[Subscription] = session.scalars(
                select(Subscription)
                .where(Subscription.ended_at.is_(None), Subscription.id > position)
                .order_by(Subscription.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                report.subscriptions_ended += _end_if_unrelated(session, row, now)
            if rows:
                position = rows[-1].id
        if len(rows) < batch:
            break
    horizon = now - dt.timedelta(days=policy.alert_retention_days)
    with sessions() as session, session.begin():
        result = session.execute(delete(Alert).where(Alert.occurred_at < horizon))
        report.alerts_deleted = int(getattr(result, "rowcount", 0) or 0)
        result = session.execute(
            delete(Subscription).where(
                Subscription.ended_at.is_not(None), Subscription.ended_at < horizon
            )
        )
        report.subscriptions_deleted = int(getattr(result, "rowcount", 0) or 0)
    return report
