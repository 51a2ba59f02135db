"""No personal data in plaintext at rest: the raw database bytes hold none of it."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from factories import admit, inquire, national_id, payload, submit
from ondisk import database_bytes


def _variants(value: str) -> list[bytes]:
    """The forms a leaked value could take in raw bytes."""
    return [value.encode("utf-8"), value.encode("utf-16-le"), value.encode("utf-16-be")]


def test_after_submissions_and_inquiries_no_personal_data_is_in_the_raw_bytes(
    client: FlaskClient, session: Session, engine: Engine
) -> None:
    bank = admit(session, "BANKA")
    people = []
    for i in range(1, 21):
        doc = payload(bank, account_ref=f"ACCT-{i:04d}-SECRET")
        doc["borrower"] = {
            "national_id": national_id(100 + i),
            "name": f"测试姓名{i:02d}",
            "phone": f"+86139{i:08d}",
            "address": f"上海市浦东新区秘密路{i}号",
        }
        assert submit(client, bank, doc).status_code == 201
        people.append(doc)
        # The inquiry log keeps the signed request (national ID in its body) as evidence.
        review = {"national_id": doc["borrower"]["national_id"], "purpose": "account_review"}
        assert inquire(client, bank, review).status_code == 200
    # No checkpoint: the WAL as the submissions left it is scanned too.
    raw = database_bytes(engine, checkpoint=False)
    assert len(raw) > 0
    assert b"BANKA" in raw  # the scan sees the rows at all
    for doc in people:
        borrower = doc["borrower"]
        for value in (
            borrower["national_id"],
            borrower["name"],
            borrower["phone"],
            borrower["address"],
            doc["account_ref"],
        ):
            for form in _variants(value):
                assert form not in raw, "personal data found in plaintext at rest"
