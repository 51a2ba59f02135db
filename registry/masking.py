"""The one place that decides what each viewer may see of a borrower's data.

Every field any API returns about a borrower or a record is listed in ``FIELDS`` with a
treatment per viewer; ``present`` refuses a field that is not listed, so a new field cannot
reach a response without a decision here. The rules (DESIGN.md "Privacy"): the borrower sees
their own data whole; the reporting member sees its own records whole; another member sees a
masked ID and name, the last four characters of account references, and no contact data; the
operator sees what another member sees (staff need counts and states, not identities).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

from registry.national_id import mask as mask_national_id

__all__ = [
    "FIELDS",
    "Treatment",
    "Viewer",
    "mask_account_ref",
    "mask_name",
    "mask_national_id",
    "present",
]


class Viewer(enum.StrEnum):
    BORROWER = "borrower"
    REPORTING_MEMBER = "reporting_member"
    OTHER_MEMBER = "other_member"
    OPERATOR = "operator"


class Treatment(enum.StrEnum):
    FULL = "full"
    MASK = "mask"
    HIDE = "hide"


def mask_account_ref(account_ref: str) -> str:
    """Only the last four characters: enough for the owner to recognise, useless to anyone else."""
    return "****" + account_ref[-4:]


def mask_name(name: str) -> str:
    """``张*``: the first character (a family name in Chinese) and one star per other character."""
    return name[:1] + "*" * max(1, len(name) - 1)


_MASKERS: dict[str, Callable[[str], str]] = {
    "national_id": mask_national_id,
    "name": mask_name,
    "account_ref": mask_account_ref,
}

F, M, H = Treatment.FULL, Treatment.MASK, Treatment.HIDE


def _rule(
    borrower: Treatment, reporting: Treatment, other: Treatment, operator: Treatment
) -> dict[Viewer, Treatment]:
    return {
        Viewer.BORROWER: borrower,
        Viewer.REPORTING_MEMBER: reporting,
        Viewer.OTHER_MEMBER: other,
        Viewer.OPERATOR: operator,
    }


FIELDS: Mapping[str, Mapping[Viewer, Treatment]] = {
    # Identity: masked for anyone but the person (and the member that reported it).
    "national_id": _rule(F, F, M, M),
    "name": _rule(F, F, M, M),
    "account_ref": _rule(F, F, M, M),
    # Contact data exists only so the registry can reach the borrower (DOMAIN.md fact 4/5).
    "phone": _rule(F, F, H, H),
    "address": _rule(F, F, H, H),
    # Facts about the debt: what inquiries are for.
    **{
        name: _rule(F, F, F, F)
        for name in (
            "record_id",
            "institution",
            "institution_name",
            "suppressed",
            "product",
            "currency",
            "overdue_principal",
            "overdue_interest",
            "penalty",
            "total_overdue",
            "days_past_due",
            "first_delinquency_date",
            "last_reported_on",
            "contact_status",
            "lost_contact_since",
            "channels_tried",
            "collection_stage",
            "classification",
            "status",
            "settled_on",
            "under_dispute",
            "statement",
        )
    },
}


def present(viewer: Viewer, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as ``viewer`` may see them: whole, masked, or left out.

    Raises ``KeyError`` for a field without a rule: a programming error, caught by the tests.
    """
    shown: dict[str, Any] = {}
    for name, value in values.items():
        treatment = FIELDS[name][viewer]
        if treatment is Treatment.HIDE:
            continue
        if treatment is Treatment.MASK and value is not None:
            value = _MASKERS[name](value)
        shown[name] = value
    return shown
