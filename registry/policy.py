"""Jurisdiction rules: charging caps and limits, each with its source and the harm it prevents.

The defaults come from the source material (DOMAIN.md, seed 002): a late penalty of at most 1% of
the overdue principal, and overdue interest of at most 24% a year on the overdue principal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from registry.classification import CARD_THRESHOLDS, LOAN_THRESHOLDS, Thresholds, Tier, classify

CENT = Decimal("0.01")


@dataclass(frozen=True)
class Rule:
    """A documented rule: the code callers see, what it requires, why, and where it comes from."""

    code: str
    requirement: str
    rationale: str
    source: str


PENALTY_CAP = Rule(
    code="penalty_cap",
    requirement="penalty must not exceed {rate} of the overdue principal ({limit})",
    rationale=(
        "Uncapped late fees turn a small arrear into an unpayable debt; a report that claims "
        "more than the law allows would spread an unlawful amount to every member."
    ),
    source="Seed 002 (new card rules): late penalty at most 1% of the overdue principal",
)

INTEREST_CAP = Rule(
    code="interest_cap",
    requirement=(
        "overdue interest must not exceed {rate} a year of the overdue principal over "
        "the days past due ({limit})"
    ),
    rationale=(
        "Interest above the legal ceiling is not owed; recording it would overstate the debt "
        "and the borrower's risk at every other member."
    ),
    source="Seed 002: overdue interest at most 24% a year",
)


@dataclass(frozen=True)
class Policy:
    """The registry's policy; one instance per deployment, replaceable in tests."""

    penalty_rate_cap: Decimal = Decimal("0.01")
    annual_interest_rate_cap: Decimal = Decimal("0.24")
    day_count_basis: int = 365
    max_amount: Decimal = Decimal("9999999999999999.99")
    as_of_future_tolerance_days: int = 1
    # Clearing (DOMAIN.md fact 2): by default a settled record is cleared in the same
    # transaction as the settling report; a number of days keeps it that long instead.
    retention_days_after_settlement: int | None = None
    # Negative information has a maximum life even unpaid: 5 years in China's rule.
    max_age_days: int = 5 * 365 + 1
    certificate_retention_days: int = 180
    # Inquiries (DOMAIN.md "Practice"): a daily quota per member, shared by every worker, and
    # how long the inquiry log is kept (the PBOC report shows two years of inquiries).
    inquiries_per_day: int = 10_000
    inquiry_quota_overrides: Mapping[str, int] = field(default_factory=dict)
    inquiry_retention_days: int = 730
    # Consent: a consent code lives at most this long; a written authorization is accepted
    # for this many days after the borrower signed it.
    consent_code_max_days: int = 30
    written_authorization_valid_days: int = 90
    # Disputes: the reporting member must answer within this many days (China's
    # credit-reporting regulation: 20), or the record is suppressed from inquiries.
    dispute_response_days: int = 20
    # Early warning (DOMAIN.md fact 6): a webhook delivery is retried with exponential
    # back-off (base x 2^(attempt-1), capped, with jitter) and dead-lettered after this many
    # attempts (6 to 12 hours with the defaults); alerts and ended subscriptions are kept
    # this many days, long enough for a member to pull what its webhook missed.
    webhook_max_attempts: int = 12
    webhook_backoff_base_seconds: float = 30.0
    webhook_backoff_cap_seconds: float = 4 * 3600.0
    alert_retention_days: int = 90
    classification: Mapping[str, Thresholds] = field(
        default_factory=lambda: {
            "credit_card": CARD_THRESHOLDS,
            "consumer_loan": LOAN_THRESHOLDS,
            "online_loan": LOAN_THRESHOLDS,
            "mortgage": LOAN_THRESHOLDS,
            "business_loan": LOAN_THRESHOLDS,
        }
    )

    @property
    def clear_on_settlement(self) -> bool:
        return self.retention_days_after_settlement is None

    def inquiry_quota(self, institution_code: str) -> int:
        return self.inquiry_quota_overrides.get(institution_code, self.inquiries_per_day)

    def classify(self, product: str, days_past_due: int) -> Tier:
        return classify(self.classification[product], days_past_due)

    def penalty_limit(self, principal: Decimal) -> Decimal:
        """The largest penalty allowed, rounded half-up to the cent."""
        return (principal * self.penalty_rate_cap).quantize(CENT, rounding=ROUND_HALF_UP)

    def interest_limit(self, principal: Decimal, days_past_due: int) -> Decimal:
        """The largest overdue interest allowed (simple interest, actual days / basis)."""
        raw = principal * self.annual_interest_rate_cap * days_past_due / self.day_count_basis
        return raw.quantize(CENT, rounding=ROUND_HALF_UP)

    def describe(self, rule: Rule, limit: Decimal) -> str:
        rate = self.penalty_rate_cap if rule is PENALTY_CAP else self.annual_interest_rate_cap
        return rule.requirement.format(
            rate=f"{(rate * 100).normalize():f}%", limit=f"limit {limit}"
        )


DEFAULT_POLICY = Policy()
