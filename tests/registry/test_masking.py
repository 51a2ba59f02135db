"""masking.py decides alone: the table below is the specification, viewer by field."""

from __future__ import annotations

from typing import Any

import pytest

from registry import masking
from registry.masking import Viewer

NID = "11010119900307123X"
VALUES: dict[str, Any] = {
    "national_id": NID,
    "name": "张三丰",
    "account_ref": "CARD-0001-4321",
    "phone": "+8613800138000",
    "address": "北京市东城区长安街1号",
    "record_id": "a" * 32,
    "institution": "BANKA",
    "institution_name": "Bank A",
    "suppressed": False,
    "product": "credit_card",
    "currency": "CNY",
    "overdue_principal": "100.00",
    "overdue_interest": "1.00",
    "penalty": "1.00",
    "total_overdue": "102.00",
    "days_past_due": 30,
    "first_delinquency_date": "2026-10-01",
    "last_reported_on": "2026-10-30",
    "contact_status": "lost_contact",
    "lost_contact_since": "2026-10-20",
    "channels_tried": ["phone", "sms"],
    "collection_stage": "reminder",
    "classification": "special_mention",
    "status": "open",
    "settled_on": None,
    "under_dispute": False,
    "statement": "我在国外",
}
MASKED = {"national_id": "110101********123X", "name": "张**", "account_ref": "****4321"}
HIDDEN = object()

# field -> (borrower, reporting member, other member, operator); "=" shows the value whole.
TABLE: dict[str, tuple[Any, Any, Any, Any]] = {
    "national_id": ("=", "=", MASKED["national_id"], MASKED["national_id"]),
    "name": ("=", "=", MASKED["name"], MASKED["name"]),
    "account_ref": ("=", "=", MASKED["account_ref"], MASKED["account_ref"]),
    "phone": ("=", "=", HIDDEN, HIDDEN),
    "address": ("=", "=", HIDDEN, HIDDEN),
    **{
        field: ("=", "=", "=", "=")
        for field in VALUES
        if field not in ("national_id", "name", "account_ref", "phone", "address")
    },
}
VIEWERS = (Viewer.BORROWER, Viewer.REPORTING_MEMBER, Viewer.OTHER_MEMBER, Viewer.OPERATOR)


def test_the_table_covers_exactly_the_fields_masking_knows() -> None:
    assert set(TABLE) == set(masking.FIELDS) == set(VALUES)


@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("field", sorted(TABLE))
def test_each_viewer_sees_each_field_as_the_table_says(viewer: Viewer, field: str) -> None:
    want = TABLE[field][VIEWERS.index(viewer)]
    shown = masking.present(viewer, {field: VALUES[field]})
    if want is HIDDEN:
        assert field not in shown
    else:
        assert shown[field] == (VALUES[field] if want == "=" else want)


def test_a_field_without_a_rule_cannot_be_presented() -> None:
    with pytest.raises(KeyError):
        masking.present(Viewer.BORROWER, {"mother_maiden_name": "x"})


def test_missing_values_stay_missing_when_masked() -> None:
    assert masking.present(Viewer.OTHER_MEMBER, {"name": None}) == {"name": None}


@pytest.mark.parametrize(("name", "masked"), [("张三", "张*"), ("欧阳娜娜", "欧***"), ("Li", "L*")])
def test_names_keep_the_first_character(name: str, masked: str) -> None:
    assert masking.mask_name(name) == masked
