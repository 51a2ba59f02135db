"""The operator API: inquiry log, members' conduct and aggregates, never an identity."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from factories import admit, inquire, make_operator, national_id, payload, signed, submit

ALICE = national_id(1)


def test_the_operator_sees_refused_attempts_and_aggregates_without_identities(
    client: FlaskClient, session: Session
) -> None:
    bank, lender, ops = admit(session, "BANKA"), admit(session, "LENDERB"), make_operator(session)
    submit(client, bank, payload(bank))
    inquire(client, bank, {"national_id": ALICE, "purpose": "account_review"})
    inquire(client, lender, {"national_id": ALICE, "purpose": "account_review"})
    inquire(client, lender, {"national_id": ALICE, "purpose": "spying"})

    log = signed(client, ops, "GET", "/v1/operator/inquiries?outcome=refused")
    assert log.status_code == 200
    refused = log.get_json()["inquiries"]
    assert [(e["institution"], e["purpose"], e["refusal_code"]) for e in refused] == [
        ("LENDERB", "invalid", "validation_failed"),
        ("LENDERB", "account_review", "no_relationship"),
    ]
    everything = signed(client, ops, "GET", "/v1/operator/inquiries").get_data(as_text=True)
    assert ALICE not in everything and ALICE[-4:] not in everything

    summaries = signed(client, ops, "GET", "/v1/operator/members").get_json()["members"]
    by_code = {m["code"]: m for m in summaries}
    assert by_code["LENDERB"]["inquiries_today"] == 2
    assert by_code["LENDERB"]["refused_inquiries"] == 2
    assert by_code["BANKA"]["refused_inquiries"] == 0

    stats = signed(client, ops, "GET", "/v1/operator/statistics").get_json()
    assert stats["open_records"] == 1
    assert stats["records_by_classification"] == {"special_mention": 1}
    assert stats["inquiries_by_purpose"] == {"account_review": 1}
    assert stats["refused_inquiries"] == 2


def test_operator_query_parameters_are_validated(client: FlaskClient, session: Session) -> None:
    ops = make_operator(session)
    response = signed(client, ops, "GET", "/v1/operator/inquiries?limit=0&color=red")
    assert response.status_code == 422
    fields = {e["field"] for e in response.get_json()["errors"]}
    assert fields == {"limit", "color"}


def test_a_revoked_operator_is_refused(client: FlaskClient, session: Session) -> None:
    from registry import operators

    ops = make_operator(session)
    import datetime as dt

    operators.revoke(session, ops.code, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    session.commit()
    response = signed(client, ops, "GET", "/v1/operator/statistics")
    assert response.status_code == 401 and response.get_json()["code"] == "key_revoked"
