"""Who may call member endpoints: RFC 9421 signatures, key states, member states, replay."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from conftest import Clock
from factories import Member, admit, envelope, new_key, payload, signed
from registry import members

REPLAY_WINDOW = 300


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


def refused(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == code
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Signature")


def get_receipt(client: FlaskClient, member: Member, **kw: Any) -> Any:
    return signed(client, member, "GET", "/v1/receipts/does-not-exist", **kw)


def test_a_valid_signature_is_let_through(client: FlaskClient, bank: Member) -> None:
    refused(get_receipt(client, bank), 404, "receipt_not_found")


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/reports"), ("GET", "/v1/receipts/abcdefgh")]
)
def test_unsigned_requests_are_refused(client: FlaskClient, method: str, path: str) -> None:
    refused(client.open(path, method=method, data=b"{}"), 401, "request_missing_signature")


def test_an_unknown_key_is_refused(client: FlaskClient, bank: Member) -> None:
    key, keyid = new_key()
    refused(get_receipt(client, bank, key=key, keyid=keyid), 401, "request_unknown_key")


def test_a_signature_by_the_wrong_key_is_refused(client: FlaskClient, bank: Member) -> None:
    key, _ = new_key()
    refused(get_receipt(client, bank, key=key), 401, "request_signature_invalid")


def test_a_stale_signature_is_refused(client: FlaskClient, bank: Member) -> None:
    created = int(time.time()) - REPLAY_WINDOW - 5
    refused(get_receipt(client, bank, created=created), 401, "request_stale")


def test_a_signature_from_the_future_is_refused(client: FlaskClient, bank: Member) -> None:
    refused(
        get_receipt(client, bank, created=int(time.time()) + 120), 401, "request_created_in_future"
    )


def test_a_replayed_nonce_is_refused(client: FlaskClient, bank: Member) -> None:
    nonce = "replayed-nonce-0123456789"
    refused(get_receipt(client, bank, nonce=nonce), 404, "receipt_not_found")
    refused(get_receipt(client, bank, nonce=nonce), 401, "request_replayed")


def test_a_replayed_submission_is_refused_even_when_the_first_succeeded(
    client: FlaskClient, bank: Member
) -> None:
    raw = envelope(bank, payload(bank))
    nonce = "submission-nonce-0123456789"
    assert signed(client, bank, "POST", "/v1/reports", raw, nonce=nonce).status_code == 201
    refused(signed(client, bank, "POST", "/v1/reports", raw, nonce=nonce), 401, "request_replayed")


def test_a_body_changed_after_signing_is_refused(client: FlaskClient, bank: Member) -> None:
    raw = envelope(bank, payload(bank))
    response = signed(client, bank, "POST", "/v1/reports", raw)
    assert response.status_code == 201
    headers = {k: v for k, v in response.request.headers.items()}
    tampered = client.post("/v1/reports", data=raw + b" ", headers=headers)
    refused(tampered, 401, "request_digest_mismatch")


def test_a_revoked_key_is_refused(
    client: FlaskClient, bank: Member, session: Session, clock: Clock
) -> None:
    members.revoke_key(session, bank.keyid, clock())
    session.commit()
    refused(get_receipt(client, bank), 401, "key_revoked")


def test_a_key_before_its_validity_is_refused(client: FlaskClient, session: Session) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    member = admit(session, "BANKC", not_before=later)
    refused(get_receipt(client, member), 401, "key_not_yet_valid")


def test_a_key_after_its_validity_is_refused(client: FlaskClient, session: Session) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    member = admit(session, "BANKD", now=past, not_after=past + dt.timedelta(days=1))
    refused(get_receipt(client, member), 401, "key_expired")


def test_a_suspended_member_is_refused_and_reinstated_member_is_not(
    client: FlaskClient, bank: Member, session: Session, clock: Clock
) -> None:
    members.suspend(session, "BANKA", clock())
    session.commit()
    refused(get_receipt(client, bank), 403, "member_suspended")
    refused(
        signed(client, bank, "POST", "/v1/reports", envelope(bank, payload(bank))),
        403,
        "member_suspended",
    )
    members.reinstate(session, "BANKA")
    session.commit()
    refused(get_receipt(client, bank), 404, "receipt_not_found")


def test_a_signature_for_another_path_is_refused(client: FlaskClient, bank: Member) -> None:
    response = get_receipt(client, bank)
    headers = {k: v for k, v in response.request.headers.items()}
    refused(
        client.get("/v1/receipts/other-report-id", headers=headers),
        401,
        "request_signature_invalid",
    )


def test_the_signature_must_cover_the_required_components(
    client: FlaskClient, bank: Member
) -> None:
    response = get_receipt(client, bank)
    headers = {k: v for k, v in response.request.headers.items()}
    headers["Signature-Input"] = headers["Signature-Input"].replace(' "content-digest"', "")
    refused(
        client.get("/v1/receipts/does-not-exist", headers=headers), 401, "request_missing_component"
    )
