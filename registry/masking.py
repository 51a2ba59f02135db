"""The one place that decides how identifiers are shown to someone who may not see them whole."""

from __future__ import annotations

from registry.national_id import mask as mask_national_id

__all__ = ["mask_account_ref", "mask_national_id"]


def mask_account_ref(account_ref: str) -> str:
    """Only the last four characters: enough for the owner to recognise, useless to anyone else."""
    return "****" + account_ref[-4:]
