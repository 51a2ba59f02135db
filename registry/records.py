"""A record's current state with its personal fields decrypted, as plain JSON-ready values.

Callers pass the result through ``masking.present`` for the viewer at hand; nothing here decides
who may see what.
"""

from __future__ import annotations

from typing import Any

from registry.models import Delinquency
from registry.vault import Vault


def record_fields(
    vault: Vault, record: Delinquency, *, with_contact: bool = False
) -> dict[str, Any]:
    """Every field of ``record`` the APIs may show; contact data only when asked for."""
    key = vault.open_key(record.data_key)

    def plain(column: str, blob: bytes | None) -> str | None:
        if blob is None:
            return None
        return vault.unseal(key, "delinquencies", column, record.ref, blob).decode()

    fields: dict[str, Any] = {
        "record_id": record.ref,
        "institution": record.institution.code,
        "account_ref": plain("account_ref", record.account_ref_ct),
        "name": plain("name", record.name_ct),
        "product": record.product,
        "currency": record.currency,
        "overdue_principal": str(record.overdue_principal),
        "overdue_interest": str(record.overdue_interest),
        "penalty": str(record.penalty),
        "total_overdue": str(record.overdue_principal + record.overdue_interest + record.penalty),
        "days_past_due": record.days_past_due,
        "first_delinquency_date": record.first_delinquency_date.isoformat(),
        "last_reported_on": record.as_of_date.isoformat(),
        "contact_status": record.contact_status,
        "lost_contact_since": (
            record.lost_contact_since.isoformat() if record.lost_contact_since else None
        ),
        "channels_tried": [c for c in record.channels_tried.split(",") if c],
        "collection_stage": record.collection_stage,
        "classification": record.classification,
        "status": record.status,
        "settled_on": record.settled_on.isoformat() if record.settled_on else None,
    }
    if with_contact:
        fields["phone"] = plain("phone", record.phone_ct)
        fields["address"] = plain("address", record.address_ct)
    return fields
