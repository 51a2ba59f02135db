"""Every field rule of the version-1 payload, each by the rule code callers see."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from factories import national_id, payload
from registry.errors import ValidationFailed
from registry.payload import (
    HEADER_FIELDS,
    ContactStatus,
    Kind,
    Payment,
    Settlement,
    SettlementType,
    Withdrawal,
    WithdrawalReason,
    parse_report,
    peek_report_id,
)
from registry.policy import DEFAULT_POLICY

TODAY = dt.datetime.now(dt.UTC).date()


def parse(doc: Any) -> Any:
    return parse_report(doc, policy=DEFAULT_POLICY, today=TODAY)


def rules_of(doc: Any) -> set[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as info:
        parse(doc)
    return {(e.field, e.rule) for e in info.value.errors}


def with_fields(**changes: Any) -> dict[str, Any]:
    return payload(**changes)


def test_a_valid_report_parses_to_typed_values() -> None:
    report = parse(payload())
    assert report.kind is Kind.OPEN and report.state is not None
    assert report.state.overdue_principal == Decimal("10000.00")
    assert report.state.days_past_due == 30
    assert report.state.contact.status is ContactStatus.REACHABLE
    assert report.state.borrower.address is not None
    for text in (repr(report), repr(report.state), repr(report.state.borrower)):
        assert "张三" not in text


def test_address_is_optional() -> None:
    doc = payload()
    del doc["borrower"]["address"]
    state = parse(doc).state
    assert state is not None and state.borrower.address is None


@pytest.mark.parametrize(
    "field",
    [
        "version",
        "report_id",
        "institution",
        "account_ref",
        "sequence",
        "kind",
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
    ],
)
def test_every_top_level_field_is_required(field: str) -> None:
    doc = payload()
    del doc[field]
    assert (field, "required") in rules_of(doc)


@pytest.mark.parametrize("field", ["national_id", "name", "phone"])
def test_borrower_fields_are_required(field: str) -> None:
    doc = payload()
    del doc["borrower"][field]
    assert (f"borrower.{field}", "required") in rules_of(doc)


def test_unknown_fields_are_refused_not_dropped() -> None:
    doc = payload(extra="x")
    doc["borrower"]["email"] = "a@b.c"
    assert rules_of(doc) >= {("extra", "unknown_field"), ("borrower.email", "unknown_field")}


def test_only_version_1_is_understood() -> None:
    assert ("version", "range") in rules_of(with_fields(version=2))


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("report_id", "short", "format"),
        ("report_id", "r" * 65, "format"),
        ("report_id", "has space 123", "format"),
        ("institution", "bank a", "format"),
        ("account_ref", "", "format"),
        ("sequence", 0, "range"),
        ("sequence", "1", "type_integer"),
        ("sequence", True, "type_integer"),
        ("kind", "close", "one_of"),
        ("product", "payday", "one_of"),
        ("currency", "RMB", "iso4217"),
        ("currency", "cny", "iso4217"),
        ("collection_stage", "threats", "one_of"),
        ("days_past_due", 0, "range"),
        ("as_of_date", "2026/01/01", "date_format"),
        ("as_of_date", "2026-02-30", "date_format"),
        ("first_delinquency_date", "1969-12-31", "date_range"),
        ("borrower", [], "type_object"),
        ("contact", "reachable", "type_object"),
    ],
)
def test_field_rules(field: str, value: Any, rule: str) -> None:
    assert (field, rule) in rules_of(with_fields(**{field: value}))


@pytest.mark.parametrize("field", ["overdue_principal", "overdue_interest", "penalty"])
@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (100, "decimal_string"),
        (Decimal("1.5"), "decimal_string"),
        ("-1.00", "decimal_format"),
        ("1.005", "decimal_format"),
        ("1e3", "decimal_format"),
        ("NaN", "decimal_format"),
        ("Infinity", "decimal_format"),
        ("01.00", "decimal_format"),
        (" 1.00", "decimal_format"),
        ("12345678901234567", "decimal_format"),
    ],
)
def test_amounts_are_non_negative_decimal_strings_with_two_places(
    field: str, value: Any, rule: str
) -> None:
    assert (field, rule) in rules_of(with_fields(**{field: value}))


@pytest.mark.parametrize("value", ["0", "0.5", "12.30", "9999999999999999.99"])
def test_acceptable_amounts(value: str) -> None:
    doc = with_fields(overdue_principal=value, penalty="0", overdue_interest="0")
    state = parse(doc).state
    assert state is not None and state.overdue_principal == Decimal(value)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (national_id(1)[:-1] + ("0" if national_id(1)[-1] != "0" else "1"), "gb11643_check"),
        ("123", "gb11643_length"),
        (12345, "type_string"),
    ],
)
def test_national_id_rules(value: Any, rule: str) -> None:
    doc = payload()
    doc["borrower"]["national_id"] = value
    assert ("borrower.national_id", rule) in rules_of(doc)


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("name", "", "not_empty"),
        ("name", "a" * 65, "max_length"),
        ("name", "张\x00三", "no_control_characters"),
        ("phone", "138-0013-8000", "format"),
        ("address", "x" * 201, "max_length"),
    ],
)
def test_borrower_rules(field: str, value: str, rule: str) -> None:
    doc = payload()
    doc["borrower"][field] = value
    assert (f"borrower.{field}", rule) in rules_of(doc)


def test_days_past_due_must_agree_with_the_dates() -> None:
    assert ("days_past_due", "agrees_with_dates") in rules_of(with_fields(days_past_due=29))
    assert ("days_past_due", "agrees_with_dates") in rules_of(with_fields(days_past_due=31))


def test_first_delinquency_cannot_follow_as_of() -> None:
    doc = with_fields(first_delinquency_date=(TODAY + dt.timedelta(days=1)).isoformat())
    assert ("first_delinquency_date", "not_after_as_of") in rules_of(doc)


def test_as_of_cannot_be_in_the_future() -> None:
    later = TODAY + dt.timedelta(days=5)
    doc = with_fields(
        as_of_date=later.isoformat(),
        first_delinquency_date=(later - dt.timedelta(days=29)).isoformat(),
    )
    assert ("as_of_date", "not_in_future") in rules_of(doc)


def lost_contact(**contact: Any) -> dict[str, Any]:
    return with_fields(contact={"status": "lost_contact", **contact})


def test_lost_contact_with_date_and_two_channels_is_accepted() -> None:
    since = (TODAY - dt.timedelta(days=10)).isoformat()
    state = parse(lost_contact(since=since, channels_tried=["phone", "letter"])).state
    assert state is not None and state.contact.status is ContactStatus.LOST_CONTACT
    assert state.contact.since == TODAY - dt.timedelta(days=10)


def test_lost_contact_needs_its_date() -> None:
    doc = lost_contact(channels_tried=["phone", "sms"])
    assert ("contact.since", "lost_contact_since") in rules_of(doc)


@pytest.mark.parametrize("channels", [[], ["phone"], ["phone", "phone"]])
def test_lost_contact_needs_two_different_channels(channels: list[str]) -> None:
    doc = lost_contact(since=TODAY.isoformat(), channels_tried=channels)
    found = rules_of(doc)
    assert ("contact.channels_tried", "lost_contact_channels") in found or (
        "contact.channels_tried",
        "unique",
    ) in found


def test_lost_contact_since_cannot_follow_as_of() -> None:
    doc = lost_contact(
        since=(TODAY + dt.timedelta(days=1)).isoformat(), channels_tried=["phone", "sms"]
    )
    assert ("contact.since", "not_after_as_of") in rules_of(doc)


def test_unresponsive_is_not_lost_contact_and_takes_no_channels() -> None:
    doc = with_fields(contact={"status": "unresponsive", "channels_tried": ["phone", "sms"]})
    assert ("contact", "lost_contact_only") in rules_of(doc)


def test_all_broken_rules_are_reported_at_once() -> None:
    doc = with_fields(currency="XXX1", product="x", sequence=-1)
    assert {f for f, _ in rules_of(doc)} >= {"currency", "product", "sequence"}


def test_messages_never_echo_the_submitted_values() -> None:
    doc = payload()
    secret_name = "李秘密" * 30
    doc["borrower"]["name"] = secret_name
    doc["borrower"]["phone"] = "call-me-13912345678"
    doc["borrower"]["national_id"] = "11010519491231002Y"
    with pytest.raises(ValidationFailed) as info:
        parse(doc)
    text = str(info.value) + repr([e.as_dict() for e in info.value.errors])
    for value in (secret_name, "13912345678", "11010519491231002Y"):
        assert value not in text


def test_peek_report_id_needs_only_the_id() -> None:
    assert peek_report_id({"report_id": "abcdefgh-1"}) == "abcdefgh-1"
    with pytest.raises(ValidationFailed):
        peek_report_id({"report_id": 5})
    with pytest.raises(ValidationFailed):
        peek_report_id([1, 2])


def test_the_payload_must_be_an_object() -> None:
    for document in ([], "x", 3, None):
        assert ("payload", "type_object") in rules_of(document)


def test_parse_does_not_mutate_its_input() -> None:
    doc = payload()
    before = copy.deepcopy(doc)
    parse(doc)
    assert doc == before


# --- the other kinds: payment, settle, withdraw, correct -------------------------------------


def header(kind: str, **body: Any) -> dict[str, Any]:
    doc = {k: v for k, v in payload().items() if k in HEADER_FIELDS}
    return {**doc, "kind": kind, "sequence": 2, **body}


def test_a_payment_carries_amount_and_date_only() -> None:
    report = parse(header("payment", payment={"amount": "50.00", "date": TODAY.isoformat()}))
    assert report.payment == Payment(Decimal("50.00"), TODAY)
    assert report.state is None


@pytest.mark.parametrize(
    ("payment", "field", "rule"),
    [
        ({"amount": "0.00", "date": TODAY.isoformat()}, "payment.amount", "positive"),
        ({"amount": 5, "date": TODAY.isoformat()}, "payment.amount", "decimal_string"),
        ({"amount": "5.00"}, "payment.date", "required"),
        ({"amount": "5.00", "date": "2999-01-01"}, "payment.date", "not_in_future"),
        ({"amount": "5.00", "date": TODAY.isoformat(), "x": 1}, "payment.x", "unknown_field"),
    ],
)
def test_payment_rules(payment: dict[str, Any], field: str, rule: str) -> None:
    assert (field, rule) in rules_of(header("payment", payment=payment))


def test_a_state_field_on_a_payment_is_refused() -> None:
    doc = header("payment", payment={"amount": "5.00", "date": TODAY.isoformat()}, penalty="1")
    assert ("penalty", "unknown_field") in rules_of(doc)


def test_settle_names_how_and_when() -> None:
    report = parse(header("settle", settlement={"type": "negotiated", "date": "2026-01-02"}))
    assert report.settlement == Settlement(SettlementType.NEGOTIATED, dt.date(2026, 1, 2))
    assert ("settlement.type", "one_of") in rules_of(
        header("settle", settlement={"type": "forgiven", "date": "2026-01-02"})
    )
    assert ("settlement", "required") in rules_of(header("settle"))


def test_withdraw_names_its_reason() -> None:
    report = parse(header("withdraw", withdrawal={"reason": "fraud"}))
    assert report.withdrawal == Withdrawal(WithdrawalReason.FRAUD)
    assert ("withdrawal.reason", "one_of") in rules_of(
        header("withdraw", withdrawal={"reason": "changed_my_mind"})
    )


def test_correct_carries_a_full_state_like_update() -> None:
    report = parse(payload(kind="correct", sequence=3))
    assert report.kind is Kind.CORRECT and report.state is not None
