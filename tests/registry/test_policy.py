from decimal import Decimal

from registry.policy import DEFAULT_POLICY, INTEREST_CAP, PENALTY_CAP, Policy


def test_penalty_cap_is_one_percent_of_principal() -> None:
    assert DEFAULT_POLICY.penalty_limit(Decimal("10000.00")) == Decimal("100.00")
    assert DEFAULT_POLICY.penalty_limit(Decimal("12.34")) == Decimal("0.12")
    assert DEFAULT_POLICY.penalty_limit(Decimal("12.50")) == Decimal("0.13")  # half-up


def test_interest_cap_is_24_percent_a_year_over_days_past_due() -> None:
    # 10000 * 0.24 * 30 / 365 = 197.2602... -> 197.26
    assert DEFAULT_POLICY.interest_limit(Decimal("10000.00"), 30) == Decimal("197.26")
    assert DEFAULT_POLICY.interest_limit(Decimal("10000.00"), 365) == Decimal("2400.00")
    assert DEFAULT_POLICY.interest_limit(Decimal("0.00"), 100) == Decimal("0.00")


def test_caps_come_from_the_policy_object() -> None:
    strict = Policy(penalty_rate_cap=Decimal("0.005"), annual_interest_rate_cap=Decimal("0.12"))
    assert strict.penalty_limit(Decimal("1000")) == Decimal("5.00")
    assert strict.interest_limit(Decimal("3650"), 10) == Decimal("12.00")


def test_rule_descriptions_name_rate_and_limit() -> None:
    text = DEFAULT_POLICY.describe(PENALTY_CAP, Decimal("100.00"))
    assert "1%" in text and "100.00" in text
    text = DEFAULT_POLICY.describe(INTEREST_CAP, Decimal("197.26"))
    assert "24%" in text and "197.26" in text
    for rule in (PENALTY_CAP, INTEREST_CAP):
        assert rule.rationale and rule.source
