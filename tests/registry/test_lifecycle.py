"""Payments lower balances in the documented order and never below zero."""

from __future__ import annotations

from decimal import Decimal

import pytest

from registry.errors import ValidationFailed
from registry.lifecycle import apply_payment, outstanding
from registry.models import Delinquency


def record(principal: str, interest: str, penalty: str) -> Delinquency:
    return Delinquency(
        overdue_principal=Decimal(principal),
        overdue_interest=Decimal(interest),
        penalty=Decimal(penalty),
    )


def balances(r: Delinquency) -> tuple[str, str, str]:
    return str(r.penalty), str(r.overdue_interest), str(r.overdue_principal)


@pytest.mark.parametrize(
    ("amount", "after"),
    [
        ("5.00", ("5.00", "20.00", "100.00")),
        ("10.00", ("0.00", "20.00", "100.00")),
        ("25.00", ("0.00", "5.00", "100.00")),
        ("30.00", ("0.00", "0.00", "100.00")),
        ("80.50", ("0.00", "0.00", "49.50")),
    ],
)
def test_penalty_then_interest_then_principal(amount: str, after: tuple[str, str, str]) -> None:
    r = record("100.00", "20.00", "10.00")
    assert apply_payment(r, Decimal(amount)) is False
    assert balances(r) == after


def test_paying_everything_settles() -> None:
    r = record("100.00", "20.00", "10.00")
    assert apply_payment(r, Decimal("130.00")) is True
    assert outstanding(r) == Decimal("0.00")


def test_overpayment_is_refused_and_changes_nothing() -> None:
    r = record("100.00", "20.00", "10.00")
    with pytest.raises(ValidationFailed) as info:
        apply_payment(r, Decimal("130.01"))
    assert info.value.errors[0].rule == "not_above_outstanding"
    assert balances(r) == ("10.00", "20.00", "100.00")
