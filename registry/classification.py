"""Five-tier classification (五级分类) of a record from its product and days past due.

Thresholds differ by product and live in the policy: loans follow the 2023 rule (any overdue at
least special mention, over 90 days substandard, over 270 doubtful, over 360 loss); credit cards
the 2011 rule (1-90 special mention, 91-120 substandard, 121-180 doubtful, over 180 loss).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence


class Tier(enum.StrEnum):
    NORMAL = "normal"
    SPECIAL_MENTION = "special_mention"
    SUBSTANDARD = "substandard"
    DOUBTFUL = "doubtful"
    LOSS = "loss"


ORDER = (Tier.NORMAL, Tier.SPECIAL_MENTION, Tier.SUBSTANDARD, Tier.DOUBTFUL, Tier.LOSS)

# (upper bound of days past due, inclusive, tier); past the last bound: loss.
Thresholds = Sequence[tuple[int, Tier]]

LOAN_THRESHOLDS: Thresholds = (
    (0, Tier.NORMAL),
    (90, Tier.SPECIAL_MENTION),
    (270, Tier.SUBSTANDARD),
    (360, Tier.DOUBTFUL),
)
CARD_THRESHOLDS: Thresholds = (
    (0, Tier.NORMAL),
    (90, Tier.SPECIAL_MENTION),
    (120, Tier.SUBSTANDARD),
    (180, Tier.DOUBTFUL),
)


def classify(thresholds: Thresholds, days_past_due: int) -> Tier:
    for bound, tier in thresholds:
        if days_past_due <= bound:
            return tier
    return Tier.LOSS


def worst(tiers: Sequence[Tier]) -> Tier:
    return max(tiers, key=ORDER.index, default=Tier.NORMAL)
