"""The account state machine: what each report kind does to a record's balances and status.

``open`` creates the record; ``update`` and ``correct`` replace its current state (a correction
is recorded as such in the history); ``payment`` lowers the balances; ``settle`` ends it;
``withdraw`` removes it at once. Settling (explicitly or by paying the balance to zero) clears
the record when the policy says so (see ``clearing.py``).
"""

from __future__ import annotations

from decimal import Decimal

from registry.errors import FieldError, ValidationFailed
from registry.models import Delinquency

ZERO = Decimal("0.00")


def outstanding(record: Delinquency) -> Decimal:
    return record.penalty + record.overdue_interest + record.overdue_principal


def apply_payment(record: Delinquency, amount: Decimal) -> bool:
    """Lower the balances by ``amount``: penalty first, then overdue interest, then principal.

    The order follows common card and loan practice (charges before principal) and is
    documented in docs/protocol.md. A payment larger than what is outstanding is refused rather
    than silently capped: the member's books and ours would disagree. Returns True when the
    balance reaches zero.
    """
    total = outstanding(record)
    if amount > total:
        raise ValidationFailed(
            "the payment is larger than the outstanding balance",
            errors=[
                FieldError(
                    "payment.amount",
                    "not_above_outstanding",
                    f"must not exceed the outstanding balance ({total})",
                )
            ],
        )
    remaining = amount
    for name in ("penalty", "overdue_interest", "overdue_principal"):
        balance: Decimal = getattr(record, name)
        paid = min(balance, remaining)
        setattr(record, name, balance - paid)
        remaining -= paid
    return outstanding(record) == ZERO
