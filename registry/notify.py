"""Messages to borrowers (SMS) and to members, written to an outbox in the caller's transaction.

A message is queued with the change that caused it (a sign-in code, a filed dispute), so it is
sent exactly when that change commits and never for a change rolled back. A backend then
delivers it: ``outbox`` (development) leaves it for ``registry notifications`` to show;
``webhook`` POSTs it as JSON to the configured SMS gateway.

NOTE: a borrower's message holds a phone number and maybe a sign-in code, so it is sealed under
its own data key, and that key is destroyed as soon as the message is sent, given up or expired;
the row without its content goes after ``RETENTION``. The registry itself never learns from
the outbox whether an ID is known: a message without a destination is sealed and stored the
same way (state ``no_destination``), so both paths do the same work.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from string import Formatter
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from registry.errors import SetupError
from registry.models import (
    Borrower,
    BorrowerEnrolment,
    DataKey,
    Delinquency,
    Institution,
    Notification,
)
from registry.records import record_fields
from registry.secrets import KeyMaterial
from registry.settings import Settings
from registry.vault import Vault

BORROWER = "borrower"
MEMBER = "member"

PENDING = "pending"
SENT = "sent"
FAILED = "failed"
NO_DESTINATION = "no_destination"

MAX_ATTEMPTS = 5
RETENTION = dt.timedelta(days=1)
# A sign-in code is useless after ten minutes, so is its message; other news keeps for days.
LIFETIME = {"signin_code": dt.timedelta(minutes=10)}
DEFAULT_LIFETIME = dt.timedelta(days=3)
# How long a worker holds a claimed message before another may try it (at-least-once).
LEASE = dt.timedelta(seconds=60)
# Retries back off (1, 1, 2, 4 minutes), so five attempts fit in a sign-in code's lifetime.
BACKOFF = dt.timedelta(seconds=15)

LANGUAGES = ("zh-CN", "en")

# (audience, template) -> text per language. Placeholders are the template's required params;
# member texts carry references and dates only, never personal data (they are stored in clear).
TEMPLATES: Mapping[tuple[str, str], Mapping[str, str]] = {
    (BORROWER, "signin_code"): {
        "zh-CN": "【共享逾期登记】您的登录验证码是 {code}，10 分钟内有效。请勿告诉任何人。",
        "en": "Shared Delinquency Registry: your sign-in code is {code}, valid for 10 minutes. "
        "Never share it.",
    },
    (BORROWER, "dispute_filed"): {
        "zh-CN": "【共享逾期登记】您对记录 {record} 的异议已受理，报送机构须在 {due} 前答复。",
        "en": "Shared Delinquency Registry: your dispute on record {record} was filed; "
        "the member must answer by {due}.",
    },
    (BORROWER, "dispute_answered"): {
        "zh-CN": "【共享逾期登记】报送机构已答复您对记录 {record} 的异议：{answer}。",
        "en": "Shared Delinquency Registry: the member answered your dispute on record "
        "{record}: {answer}.",
    },
    (BORROWER, "dispute_expired"): {
        "zh-CN": "【共享逾期登记】报送机构未在期限内答复您对记录 {record} 的异议，"
        "该记录已暂停向查询机构展示。",
        "en": "Shared Delinquency Registry: the member did not answer your dispute on record "
        "{record} in time; the record is no longer shown to inquirers.",
    },
    (BORROWER, "record_cleared"): {
        "zh-CN": "【共享逾期登记】您在 {institution} 的逾期记录已清除，可在个人门户下载清除证明。",
        "en": "Shared Delinquency Registry: your record at {institution} was cleared; the "
        "clearance certificate is in your portal.",
    },
    (MEMBER, "dispute_filed"): {
        "zh-CN": "借款人对记录 {record} 提出异议（{dispute}），请在 {due} 前答复。",
        "en": "A borrower disputed record {record} ({dispute}); answer by {due}.",
    },
    (MEMBER, "dispute_answered"): {
        "zh-CN": "异议 {dispute}（记录 {record}）已答复：{answer}。",
        "en": "Dispute {dispute} on record {record} was answered: {answer}.",
    },
    (MEMBER, "dispute_expired"): {
        "zh-CN": "异议 {dispute}（记录 {record}）未在期限内答复，记录已暂停展示。",
        "en": "Dispute {dispute} on record {record} was not answered in time; the record is "
        "suppressed from inquiries until you answer.",
    },
}


def placeholders(audience: str, template: str) -> frozenset[str]:
    """The params a template needs (the same in every language)."""
    texts = TEMPLATES[(audience, template)]
    return frozenset(
        name for text in texts.values() for _, name, _, _ in Formatter().parse(text) if name
    )


def render(audience: str, template: str, params: Mapping[str, str]) -> str:
    """The message in Chinese, then English: the registry does not know the reader's language.

    Raises ``KeyError`` for an unknown template or a missing param (a programming error).
    """
    texts = TEMPLATES[(audience, template)]
    missing = placeholders(audience, template) - set(params)
    if missing:
        raise KeyError(f"template {template!r} needs params {sorted(missing)}")
    return "\n".join(texts[lang].format_map(params) for lang in LANGUAGES)


def _lifetime(template: str) -> dt.timedelta:
    return LIFETIME.get(template, DEFAULT_LIFETIME)


def _phone_of(session: Session, vault: Vault, borrower_index: bytes) -> str | None:
    """The enrolled phone (confirmed in person), else the phone on the newest record."""
    enrolment = session.scalar(
        select(BorrowerEnrolment).where(BorrowerEnrolment.borrower_index == borrower_index)
    )
    if enrolment is not None and enrolment.phone_ct is not None:
        key = vault.open_key(enrolment.data_key)
        return vault.unseal(
            key, "borrower_enrolments", "phone", enrolment.ref, enrolment.phone_ct
        ).decode()
    record = session.scalar(
        select(Delinquency)
        .join(Borrower, Delinquency.borrower_id == Borrower.id)
        .where(Borrower.id_index == borrower_index)
        .order_by(Delinquency.updated_at.desc(), Delinquency.id.desc())
        .limit(1)
    )
    if record is None:
        return None
    phone: str | None = record_fields(vault, record, with_contact=True)["phone"]
    return phone or None


def to_borrower(
    session: Session,
    material: KeyMaterial,
    *,
    borrower_index: bytes,
    template: str,
    params: Mapping[str, str],
    now: dt.datetime,
) -> None:
    """Queue a message to the borrower's phone; without one, record that there was none."""
    text = render(BORROWER, template, params)
    vault = Vault(material.keyring)
    phone = _phone_of(session, vault, borrower_index)
    ref = secrets.token_hex(16)
    data_key, key = vault.new_key(session, now)
    body = json.dumps({"to": phone, "text": text, "params": dict(params)}, ensure_ascii=False)
    session.add(
        Notification(
            ref=ref,
            audience=BORROWER,
            template=template,
            data_key=data_key,
            message_ct=vault.seal(key, "notifications", "message", ref, body.encode()),
            state=PENDING if phone else NO_DESTINATION,
            created_at=now,
            next_attempt_at=now,
            expires_at=now + _lifetime(template),
            finished_at=None if phone else now,
        )
    )
    session.flush()


def to_member(
    session: Session,
    *,
    institution_id: int,
    template: str,
    params: Mapping[str, str],
    now: dt.datetime,
) -> None:
    """Queue a message to a member (references and dates only; see ``TEMPLATES``)."""
    text = render(MEMBER, template, params)
    member = session.get(Institution, institution_id)
    if member is None:
        raise KeyError(f"no institution {institution_id}")
    body = {"to": member.code, "text": text, "params": dict(params)}
    session.add(
        Notification(
            ref=secrets.token_hex(16),
            audience=MEMBER,
            template=template,
            institution_id=institution_id,
            message=json.dumps(body, ensure_ascii=False),
            state=PENDING,
            created_at=now,
            next_attempt_at=now,
            expires_at=now + _lifetime(template),
        )
    )
    session.flush()


# --- reading the outbox ---------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One message as a backend sends it (and the development CLI shows it)."""

    ref: str
    audience: str
    template: str
    to: str | None
    text: str
    state: str
    created_at: dt.datetime
    params: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.ref,
            "audience": self.audience,
            "template": self.template,
            "to": self.to,
            "text": self.text,
            "state": self.state,
            "created_at": self.created_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


def _open(vault: Vault, row: Notification) -> Message | None:
    """The message behind ``row``, or None once its content has been destroyed."""
    if row.message is not None:
        raw: dict[str, Any] = json.loads(row.message)
    elif row.message_ct is not None and row.data_key is not None:
        key = vault.open_key(row.data_key)
        raw = json.loads(vault.unseal(key, "notifications", "message", row.ref, row.message_ct))
    else:
        return None
    return Message(
        ref=row.ref,
        audience=row.audience,
        template=row.template,
        to=raw["to"],
        text=raw["text"],
        state=row.state,
        created_at=row.created_at,
        params=raw.get("params", {}),
    )


def outbox(session: Session, material: KeyMaterial, now: dt.datetime) -> list[Message]:
    """Every message whose content still exists and has not expired, oldest first.

    For the development backend's CLI: it decrypts what it shows.
    """
    vault = Vault(material.keyring)
    rows = session.scalars(
        select(Notification)
        .where(Notification.expires_at > now, Notification.state.in_([PENDING, NO_DESTINATION]))
        .order_by(Notification.id)
    )
    return [m for row in rows if (m := _open(vault, row)) is not None]


# --- delivery -------------------------------------------------------------------------------


class DeliveryFailed(Exception):
    """The backend could not hand the message over; the worker tries again later."""


class Notifier(Protocol):
    #: False for the development outbox: messages stay queued for the CLI.
    delivers: bool

    def send(self, message: Message) -> None: ...


class OutboxNotifier:
    """Development backend: nothing leaves the host; ``registry notifications`` shows messages."""

    delivers = False

    def send(self, message: Message) -> None:
        raise AssertionError("the outbox backend never sends")


class WebhookNotifier:
    """POSTs each message as JSON to the SMS gateway; any 2xx answer means delivered.

    The gateway URL is the operator's own setting (not a member's input), so it may be on a
    private network.
    """

    delivers = True

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout

    def send(self, message: Message) -> None:
        body = json.dumps(message.as_json(), ensure_ascii=False).encode()
        request = urllib.request.Request(  # noqa: S310 - the operator's configured http(s) URL
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                status = response.status
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryFailed(type(exc).__name__) from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"status {status}")


def make_notifier(settings: Settings) -> Notifier:
    """The backend the settings name; a webhook without an http(s) URL is a setup error."""
    if settings.notifier == "outbox":
        return OutboxNotifier()
    if settings.notifier == "webhook":
        url = settings.sms_gateway_url or ""
        if not url.startswith(("https://", "http://")):
            raise SetupError("REGISTRY_NOTIFIER=webhook needs REGISTRY_SMS_GATEWAY_URL (http(s))")
        return WebhookNotifier(url, timeout=settings.webhook_timeout_seconds)
    raise SetupError("REGISTRY_NOTIFIER must be 'outbox' or 'webhook'")


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    purged: int = 0


def _shred(session: Session, row: Notification) -> None:
    """Destroy a borrower message's content and key (crypto-shredding), keeping the row."""
    key_id = row.data_key_id
    row.message_ct = None
    row.message = None
    row.data_key = None
    row.data_key_id = None
    session.flush()
    if key_id is not None:
        session.execute(delete(DataKey).where(DataKey.id == key_id))


def deliver_pending(
    sessions: sessionmaker[Session],
    material: KeyMaterial,
    notifier: Notifier,
    now: dt.datetime,
    *,
    limit: int = 100,
) -> DeliveryReport:
    """Send due messages once; safe to run in several workers at once.

    Messages are claimed in a short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
    the write lock on SQLite) that pushes their next attempt past a lease, then sent outside
    any transaction, then marked. A worker that dies mid-way leaves them due again.
    """
    report = DeliveryReport()
    if notifier.delivers:
        vault = Vault(material.keyring)
        with sessions() as session, session.begin():
            rows = session.scalars(
                select(Notification)
                .where(
                    Notification.state == PENDING,
                    Notification.next_attempt_at <= now,
                    Notification.expires_at > now,
                )
                .order_by(Notification.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            claimed: list[Message] = []
            for row in rows:
                row.attempts += 1
                row.next_attempt_at = now + max(LEASE, BACKOFF * 2**row.attempts)
                message = _open(vault, row)
                if message is not None:
                    claimed.append(message)
        for message in claimed:
            try:
                notifier.send(message)
                outcome = SENT
            except DeliveryFailed:
                outcome = PENDING
            with sessions() as session, session.begin():
                held = session.scalar(select(Notification).where(Notification.ref == message.ref))
                if held is None or held.state != PENDING:
                    continue
                if outcome == SENT:
                    held.state, held.finished_at = SENT, now
                    _shred(session, held)
                    report.sent += 1
                elif held.attempts >= MAX_ATTEMPTS:
                    held.state, held.finished_at = FAILED, now
                    _shred(session, held)
                    report.failed += 1
                else:
                    report.retried += 1
    with sessions() as session, session.begin():
        report.purged = purge(session, now)
    return report


def purge(session: Session, now: dt.datetime) -> int:
    """Delete expired messages and finished ones past ``RETENTION``, with their keys."""
    condition = (Notification.expires_at <= now) | (Notification.finished_at <= now - RETENTION)
    found = session.execute(
        select(Notification.id, Notification.data_key_id).where(condition)
    ).all()
    if not found:
        return 0
    session.execute(delete(Notification).where(Notification.id.in_([i for i, _ in found])))
    keys = [k for _, k in found if k is not None]
    if keys:
        session.execute(delete(DataKey).where(DataKey.id.in_(keys)))
    return len(found)
