"""Version 1 of the report payload: parse the signed JSON into a typed report, or say what is wrong.

Every rule has a stable code (the ``rule`` of a ``FieldError``) documented in docs/protocol.md.
Messages say what the rule requires and never echo the submitted value: values may be personal.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from registry.errors import FieldError, ValidationFailed
from registry.fields import (
    Collector,
    Invalid,
    amount_value,
    choice,
    currency_code,
    date_value,
    integer,
    json_object,
    national_id_value,
    string,
)
from registry.policy import Policy

PAYLOAD_TYPE = "application/vnd.delinquency-registry.report+json;version=1"

_REPORT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,63}")
_ACCOUNT_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")
_INSTITUTION = re.compile(r"[A-Z0-9][A-Z0-9_-]{1,31}")
_PHONE = re.compile(r"\+?[0-9]{5,20}")
_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,15})(\.[0-9]{1,2})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class Kind(enum.StrEnum):
    OPEN = "open"
    UPDATE = "update"
    CORRECT = "correct"
    PAYMENT = "payment"
    SETTLE = "settle"
    WITHDRAW = "withdraw"


STATE_KINDS = frozenset({Kind.OPEN, Kind.UPDATE, Kind.CORRECT})


class SettlementType(enum.StrEnum):
    PAID_IN_FULL = "paid_in_full"
    NEGOTIATED = "negotiated"


class WithdrawalReason(enum.StrEnum):
    REPORTED_IN_ERROR = "reported_in_error"
    FRAUD = "fraud"


class Product(enum.StrEnum):
    CREDIT_CARD = "credit_card"
    CONSUMER_LOAN = "consumer_loan"
    ONLINE_LOAN = "online_loan"
    MORTGAGE = "mortgage"
    BUSINESS_LOAN = "business_loan"


class ContactStatus(enum.StrEnum):
    REACHABLE = "reachable"
    UNRESPONSIVE = "unresponsive"
    LOST_CONTACT = "lost_contact"


class Channel(enum.StrEnum):
    PHONE = "phone"
    SMS = "sms"
    EMAIL = "email"
    LETTER = "letter"
    VISIT = "visit"
    APP = "app"


class CollectionStage(enum.StrEnum):
    REMINDER = "reminder"
    REPAYMENT_PLAN = "repayment_plan"
    COLLECTION_AGENCY = "collection_agency"
    LEGAL_ACTION = "legal_action"


@dataclass(frozen=True)
class BorrowerIdentity:
    national_id: str
    name: str
    phone: str
    address: str | None

    def __repr__(self) -> str:
        return "BorrowerIdentity(<redacted>)"


@dataclass(frozen=True)
class Contact:
    status: ContactStatus
    since: dt.date | None
    channels_tried: tuple[Channel, ...]


@dataclass(frozen=True)
class AccountState:
    """What ``open``, ``update`` and ``correct`` reports say about the account now."""

    borrower: BorrowerIdentity
    product: Product
    currency: str
    overdue_principal: Decimal
    overdue_interest: Decimal
    penalty: Decimal
    days_past_due: int
    first_delinquency_date: dt.date
    as_of_date: dt.date
    contact: Contact
    collection_stage: CollectionStage

    def __repr__(self) -> str:
        return f"AccountState(product={self.product.value}, <personal fields redacted>)"


@dataclass(frozen=True)
class Payment:
    amount: Decimal
    date: dt.date


@dataclass(frozen=True)
class Settlement:
    type: SettlementType
    date: dt.date


@dataclass(frozen=True)
class Withdrawal:
    reason: WithdrawalReason


@dataclass(frozen=True)
class ReportPayload:
    """A validated version-1 report: the header, and the part its kind carries."""

    report_id: str
    institution: str
    account_ref: str
    sequence: int
    kind: Kind
    state: AccountState | None = None
    payment: Payment | None = None
    settlement: Settlement | None = None
    withdrawal: Withdrawal | None = None

    def __repr__(self) -> str:
        return f"ReportPayload(report_id={self.report_id!r}, kind={self.kind.value})"


HEADER_FIELDS = frozenset(
    {"version", "report_id", "institution", "account_ref", "sequence", "kind"}
)
STATE_FIELDS = frozenset(
    {
        "borrower",
        "product",
        "currency",
        "overdue_principal",
        "overdue_interest",
        "penalty",
        "days_past_due",
        "first_delinquency_date",
        "as_of_date",
        "contact",
        "collection_stage",
    }
)
BODY_FIELDS: dict[Kind, frozenset[str]] = {
    **{kind: STATE_FIELDS for kind in STATE_KINDS},
    Kind.PAYMENT: frozenset({"payment"}),
    Kind.SETTLE: frozenset({"settlement"}),
    Kind.WITHDRAW: frozenset({"withdrawal"}),
}
BORROWER_FIELDS = frozenset({"national_id", "name", "phone", "address"})
CONTACT_FIELDS = frozenset({"status", "since", "channels_tried"})


def peek_report_id(document: Any) -> str:
    """The report id alone, for the idempotency look-up that precedes full validation."""
    if not isinstance(document, dict):
        raise ValidationFailed(
            "the payload must be a JSON object",
            errors=[FieldError("payload", "type_object", "must be an object")],
        )
    c = Collector()
    report_id = c.take(document, "report_id", "", string(_REPORT_ID, describe=_REPORT_ID_TEXT))
    if report_id is None:
        raise ValidationFailed("the report id is missing or malformed", errors=c.errors)
    return report_id


_REPORT_ID_TEXT = "8-64 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit"


def parse_report(document: Any, *, policy: Policy, today: dt.date) -> ReportPayload:
    """Validate a decoded payload; raise ``ValidationFailed`` listing every broken rule."""
    c = Collector()
    if not isinstance(document, dict):
        raise ValidationFailed(
            "the payload must be a JSON object",
            errors=[FieldError("payload", "type_object", "must be an object")],
        )
    c.take(document, "version", "", integer(1, 1))
    report_id = c.take(document, "report_id", "", string(_REPORT_ID, describe=_REPORT_ID_TEXT))
    institution = c.take(
        document,
        "institution",
        "",
        string(_INSTITUTION, describe="the member's institution code"),
    )
    account_ref = c.take(
        document,
        "account_ref",
        "",
        string(_ACCOUNT_REF, describe="1-64 characters of A-Z a-z 0-9 . _ / -"),
    )
    sequence = c.take(document, "sequence", "", integer(1, 2**53))
    kind = c.take(document, "kind", "", choice(Kind))
    latest = today + dt.timedelta(days=policy.as_of_future_tolerance_days)
    body: dict[str, Any] = {}
    if kind is not None:
        c.unknown(document, HEADER_FIELDS | BODY_FIELDS[kind], "")
        if kind in STATE_KINDS:
            body["state"] = _state(c, document, latest)
        elif kind is Kind.PAYMENT:
            body["payment"] = _payment(c, document, latest)
        elif kind is Kind.SETTLE:
            body["settlement"] = _settlement(c, document, latest)
        else:
            body["withdrawal"] = _withdrawal(c, document)
    if c.errors:
        raise ValidationFailed("the report breaks the rules listed in errors", errors=c.errors)
    assert report_id and institution and account_ref and sequence and kind
    return ReportPayload(
        report_id=report_id,
        institution=institution,
        account_ref=account_ref,
        sequence=sequence,
        kind=kind,
        **body,
    )


def _state(c: Collector, document: dict[str, Any], latest: dt.date) -> AccountState | None:
    before = len(c.errors)
    borrower = _borrower(c, document)
    product = c.take(document, "product", "", choice(Product))
    currency = c.take(document, "currency", "", currency_code)
    principal = c.take(document, "overdue_principal", "", amount_value)
    interest = c.take(document, "overdue_interest", "", amount_value)
    penalty = c.take(document, "penalty", "", amount_value)
    dpd = c.take(document, "days_past_due", "", integer(1, 36500))
    first = c.take(document, "first_delinquency_date", "", date_value)
    as_of = c.take(document, "as_of_date", "", date_value)
    contact = _contact(c, document)
    stage = c.take(document, "collection_stage", "", choice(CollectionStage))

    if as_of is not None and as_of > latest:
        c.add("as_of_date", "not_in_future", "must not be in the future")
    if first is not None and as_of is not None:
        if first > as_of:
            c.add("first_delinquency_date", "not_after_as_of", "must not be after as_of_date")
        elif dpd is not None and dpd != (as_of - first).days + 1:
            c.add(
                "days_past_due",
                "agrees_with_dates",
                "must equal as_of_date - first_delinquency_date + 1 "
                "(the first overdue day is day 1)",
            )
    if contact and contact.since and as_of and contact.since > as_of:
        c.add("contact.since", "not_after_as_of", "must not be after as_of_date")
    if len(c.errors) > before:
        return None
    assert borrower and product and currency and principal is not None
    assert interest is not None and penalty is not None and dpd and first and as_of
    assert contact and stage
    return AccountState(
        borrower=borrower,
        product=product,
        currency=currency,
        overdue_principal=principal,
        overdue_interest=interest,
        penalty=penalty,
        days_past_due=dpd,
        first_delinquency_date=first,
        as_of_date=as_of,
        contact=contact,
        collection_stage=stage,
    )


def _payment(c: Collector, document: dict[str, Any], latest: dt.date) -> Payment | None:
    obj = c.take(document, "payment", "", json_object)
    if obj is None:
        return None
    c.unknown(obj, frozenset({"amount", "date"}), "payment.")
    amount = c.take(obj, "amount", "payment.", amount_value)
    date = c.take(obj, "date", "payment.", date_value)
    if amount is not None and amount <= 0:
        c.add("payment.amount", "positive", "must be greater than zero")
        amount = None
    if date is not None and date > latest:
        c.add("payment.date", "not_in_future", "must not be in the future")
        date = None
    if amount is None or date is None:
        return None
    return Payment(amount=amount, date=date)


def _settlement(c: Collector, document: dict[str, Any], latest: dt.date) -> Settlement | None:
    obj = c.take(document, "settlement", "", json_object)
    if obj is None:
        return None
    c.unknown(obj, frozenset({"type", "date"}), "settlement.")
    kind = c.take(obj, "type", "settlement.", choice(SettlementType))
    date = c.take(obj, "date", "settlement.", date_value)
    if date is not None and date > latest:
        c.add("settlement.date", "not_in_future", "must not be in the future")
        date = None
    if kind is None or date is None:
        return None
    return Settlement(type=kind, date=date)


def _withdrawal(c: Collector, document: dict[str, Any]) -> Withdrawal | None:
    obj = c.take(document, "withdrawal", "", json_object)
    if obj is None:
        return None
    c.unknown(obj, frozenset({"reason"}), "withdrawal.")
    reason = c.take(obj, "reason", "withdrawal.", choice(WithdrawalReason))
    return Withdrawal(reason=reason) if reason is not None else None


def _borrower(c: Collector, document: dict[str, Any]) -> BorrowerIdentity | None:
    obj = c.take(document, "borrower", "", json_object)
    if obj is None:
        return None
    c.unknown(obj, BORROWER_FIELDS, "borrower.")
    nid = c.take(obj, "national_id", "borrower.", national_id_value)
    name = c.take(obj, "name", "borrower.", string(max_len=64))
    phone = c.take(
        obj,
        "phone",
        "borrower.",
        string(_PHONE, describe="5-20 digits, optionally starting with +"),
    )
    address = c.take(obj, "address", "borrower.", string(max_len=200), required=False)
    if nid is None or name is None or phone is None:
        return None
    return BorrowerIdentity(national_id=nid, name=name, phone=phone, address=address)


def _channels(value: Any) -> tuple[Channel, ...]:
    if not isinstance(value, list):
        raise Invalid("type_array", "must be an array of channels")
    parse = choice(Channel)
    channels = tuple(parse(v) for v in value)
    if len(set(channels)) != len(channels):
        raise Invalid("unique", "must not list a channel twice")
    return channels


def _contact(c: Collector, document: dict[str, Any]) -> Contact | None:
    obj = c.take(document, "contact", "", json_object)
    if obj is None:
        return None
    c.unknown(obj, CONTACT_FIELDS, "contact.")
    status = c.take(obj, "status", "contact.", choice(ContactStatus))
    since = c.take(obj, "since", "contact.", date_value, required=False)
    channels = c.take(obj, "channels_tried", "contact.", _channels, required=False) or ()
    if status is None:
        return None
    if status is ContactStatus.LOST_CONTACT:
        # NOTE: not answering calls is not lost contact (DOMAIN.md fact 9); the status must
        # show that the member tried several channels and since when the borrower is unreachable.
        if since is None and "since" not in obj:
            c.add(
                "contact.since",
                "lost_contact_since",
                "is required when status is lost_contact (the date since when unreachable)",
            )
        if len(channels) < 2:
            c.add(
                "contact.channels_tried",
                "lost_contact_channels",
                "must list at least two different channels when status is lost_contact",
            )
    elif "since" in obj or "channels_tried" in obj:
        c.add(
            "contact",
            "lost_contact_only",
            "since and channels_tried are given only with status lost_contact",
        )
    return Contact(status=status, since=since, channels_tried=channels)
