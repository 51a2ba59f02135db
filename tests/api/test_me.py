"""The borrower's JSON API: sign-in that reveals nothing, tokens, and only one's own data."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from typing import Any

import pytest
from borrowers import index_of, seed
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from conftest import Clock
from crypto import dsse
from factories import Member, admit, envelope, national_id, problem_of, signed
from registry import notify
from registry.borrower_file import FILE_PAYLOAD_TYPE
from registry.intake import Intake
from registry.models import Consent, Inquiry, Institution, Notification
from registry.policy import Policy
from registry.secrets import KeyMaterial, load_key_material
from registry.settings import Settings

ALICE, BOB, NOBODY = national_id(1), national_id(2), national_id(3)
ALICE_PHONE, BOB_PHONE = "+8613800000001", "+8613800000002"


@pytest.fixture
def material(settings: Settings) -> KeyMaterial:
    return load_key_material(settings)


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture
def people(session: Session, material: KeyMaterial, bank: Member) -> dict[str, Any]:
    """Alice with two records (two members), Bob with one."""
    other = admit(session, "BANKB")
    return {
        "alice": seed(session, material, bank, serial=1, phone=ALICE_PHONE, name="李丽"),
        "alice_b": seed(
            session, material, other, serial=1, phone=ALICE_PHONE, account_ref="LOAN-9", name="李丽"
        ),
        "bob": seed(
            session, material, bank, serial=2, phone=BOB_PHONE, account_ref="CARD-B", name="王波"
        ),
    }


@pytest.fixture
def https(client: FlaskClient) -> FlaskClient:
    client.environ_base["wsgi.url_scheme"] = "https"
    return client


def last_code(session: Session, material: KeyMaterial, phone: str, now: dt.datetime) -> str:
    session.commit()
    messages = [
        m
        for m in notify.outbox(session, material, now)
        if m.template == "signin_code" and m.to == phone
    ]
    session.commit()
    assert messages, f"no code sent to {phone}"
    return messages[-1].params["code"]


def ask(client: FlaskClient, nid: str, **kw: Any) -> Any:
    return client.post("/v1/me/signin", json={"national_id": nid}, **kw)


def token_for(
    client: FlaskClient, session: Session, material: KeyMaterial, nid: str, phone: str
) -> dict[str, str]:
    assert ask(client, nid).status_code == 202
    code = last_code(session, material, phone, dt.datetime.now(dt.UTC))
    answer = client.post("/v1/me/signin/verify", json={"national_id": nid, "code": code})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["Cache-Control"] == "no-store"
    return {"Authorization": f"Bearer {answer.get_json()['token']}"}


def test_the_signin_answer_is_the_same_for_known_and_unknown_ids(
    client: FlaskClient, session: Session, material: KeyMaterial, people: dict[str, Any]
) -> None:
    known, unknown = ask(client, ALICE), ask(client, NOBODY)
    assert known.status_code == unknown.status_code == 202
    assert known.get_data() == unknown.get_data()
    same = {k: v for k, v in known.headers.items() if k != "X-Request-Id"}
    assert same == {k: v for k, v in unknown.headers.items() if k != "X-Request-Id"}
    session.commit()
    states = sorted(n.state for n in session.scalars(select(Notification)))
    assert states == [notify.NO_DESTINATION, notify.PENDING]


def test_a_malformed_id_is_named_but_unknown_fields_are_refused(client: FlaskClient) -> None:
    bad = ALICE[:-1] + ("0" if ALICE[-1] != "0" else "1")
    body = problem_of(ask(client, bad), 422, "validation_failed")
    assert {(e["field"], e["rule"]) for e in body["errors"]} == {("national_id", "gb11643_check")}
    extra = client.post("/v1/me/signin", json={"national_id": ALICE, "phone": "+86138"})
    body = problem_of(extra, 422, "validation_failed")
    assert [e["field"] for e in body["errors"]] == ["phone"]
    dup = client.post(
        "/v1/me/signin",
        data=f'{{"national_id":"{ALICE}","national_id":"{BOB}"}}',
        content_type="application/json",
    )
    problem_of(dup, 400, "body_malformed")


def test_five_wrong_codes_kill_the_code(
    client: FlaskClient, session: Session, material: KeyMaterial, people: dict[str, Any]
) -> None:
    ask(client, ALICE)
    code = last_code(session, material, ALICE_PHONE, dt.datetime.now(dt.UTC))
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        answer = client.post("/v1/me/signin/verify", json={"national_id": ALICE, "code": wrong})
        problem_of(answer, 401, "signin_code_invalid")
    right = client.post("/v1/me/signin/verify", json={"national_id": ALICE, "code": code})
    problem_of(right, 401, "signin_code_invalid")


def test_a_code_expires_after_ten_minutes_and_works_once(
    client: FlaskClient,
    session: Session,
    material: KeyMaterial,
    people: dict[str, Any],
    clock: Clock,
) -> None:
    ask(client, ALICE)
    code = last_code(session, material, ALICE_PHONE, dt.datetime.now(dt.UTC))
    clock.advance(minutes=10, seconds=1)
    late = client.post("/v1/me/signin/verify", json={"national_id": ALICE, "code": code})
    problem_of(late, 401, "signin_code_invalid")
    ask(client, ALICE)
    code = last_code(session, material, ALICE_PHONE, clock())
    ok = client.post("/v1/me/signin/verify", json={"national_id": ALICE, "code": code})
    assert ok.status_code == 200
    again = client.post("/v1/me/signin/verify", json={"national_id": ALICE, "code": code})
    problem_of(again, 401, "signin_code_invalid")


def test_code_requests_are_limited_per_id_and_per_client(
    client: FlaskClient, people: dict[str, Any]
) -> None:
    for _ in range(5):
        assert ask(client, ALICE).status_code == 202
    limited = ask(client, ALICE)
    problem_of(limited, 429, "rate_limited")
    assert 0 < int(limited.headers["Retry-After"]) <= 3600
    # A forged X-Forwarded-For does not make a new client (no trusted proxy configured).
    for serial in range(10, 25):
        ask(client, national_id(serial), headers={"X-Forwarded-For": f"10.0.0.{serial}"})
    problem_of(ask(client, national_id(40)), 429, "rate_limited")
    other_client = ask(client, national_id(41), environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert other_client.status_code == 202


def test_anonymous_members_and_forged_tokens_get_nothing(
    client: FlaskClient, bank: Member, people: dict[str, Any]
) -> None:
    for path in ("/v1/me/records", "/v1/me/inquiries", "/v1/me/file", "/v1/me/consents"):
        problem_of(client.get(path), 401, "borrower_not_signed_in")
        problem_of(signed(client, bank, "GET", path), 401, "borrower_not_signed_in")
        forged = {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"}
        problem_of(client.get(path, headers=forged), 401, "borrower_not_signed_in")


def test_records_are_whole_and_only_mine(
    client: FlaskClient, session: Session, material: KeyMaterial, people: dict[str, Any]
) -> None:
    alice = token_for(client, session, material, ALICE, ALICE_PHONE)
    body = client.get("/v1/me/records", headers=alice).get_json()
    assert body["national_id"] == ALICE
    assert {r["institution"] for r in body["records"]} == {"BANKA", "BANKB"}
    first = next(r for r in body["records"] if r["institution"] == "BANKA")
    assert first["account_ref"] == "CARD-0001-4321" and first["name"] == "李丽"
    assert first["phone"] == ALICE_PHONE and first["under_dispute"] is False
    assert first["classification"] and first["collection_stage"] == "reminder"
    text = json.dumps(body, ensure_ascii=False)
    assert BOB not in text and "王波" not in text and BOB_PHONE not in text

    bob = token_for(client, session, material, BOB, BOB_PHONE)
    bob_records = client.get("/v1/me/records", headers=bob).get_json()["records"]
    assert [r["account_ref"] for r in bob_records] == ["CARD-B"]


def test_sessions_die_when_idle_or_signed_out(
    client: FlaskClient,
    session: Session,
    material: KeyMaterial,
    people: dict[str, Any],
    clock: Clock,
) -> None:
    alice = token_for(client, session, material, ALICE, ALICE_PHONE)
    clock.advance(minutes=14)
    assert client.get("/v1/me/records", headers=alice).status_code == 200
    clock.advance(minutes=14)
    assert client.get("/v1/me/records", headers=alice).status_code == 200
    clock.advance(minutes=15, seconds=1)
    problem_of(client.get("/v1/me/records", headers=alice), 401, "borrower_not_signed_in")

    alice = token_for(client, session, material, ALICE, ALICE_PHONE)
    assert client.post("/v1/me/signout", headers=alice).status_code == 204
    problem_of(client.get("/v1/me/records", headers=alice), 401, "borrower_not_signed_in")


def _inquiry(session: Session, code: str, outcome: str, **kw: Any) -> None:
    institution = session.scalar(select(Institution).where(Institution.code == code))
    assert institution is not None
    session.add(
        Inquiry(
            ref=secrets.token_hex(16),
            institution_id=institution.id,
            purpose=kw.pop("purpose", "credit_application"),
            consent_kind=kw.pop("consent_kind", "consent_code"),
            outcome=outcome,
            created_at=dt.datetime.now(dt.UTC),
            **kw,
        )
    )
    session.commit()


def test_inquiries_show_who_looked_at_my_file_only(
    client: FlaskClient, session: Session, material: KeyMaterial, people: dict[str, Any]
) -> None:
    alice_index, bob_index = index_of(material, ALICE), index_of(material, BOB)
    _inquiry(session, "BANKB", "answered", borrower_index=alice_index)
    _inquiry(session, "BANKB", "refused", borrower_index=alice_index, refusal_code="x")
    _inquiry(session, "BANKA", "answered", borrower_index=bob_index, purpose="account_review")
    alice = token_for(client, session, material, ALICE, ALICE_PHONE)
    [seen] = client.get("/v1/me/inquiries", headers=alice).get_json()["inquiries"]
    assert seen["institution"] == "BANKB" and seen["purpose"] == "credit_application"
    assert seen["consent_kind"] == "consent_code" and seen["date"].endswith("Z")


def test_disputes_are_filed_on_my_records_only(
    client: FlaskClient, session: Session, material: KeyMaterial, people: dict[str, Any]
) -> None:
    alice = token_for(client, session, material, ALICE, ALICE_PHONE)
    bob = token_for(client, session, material, BOB, BOB_PHONE)
    [bob_record] = client.get("/v1/me/records", headers=bob).get_json()["records"]
    mine = client.get("/v1/me/records", headers=alice).get_json()["records"][0]

    stolen = client.post(
        "/v1/me/disputes",
        json={"record_id": bob_record["record_id"], "reason": "not_mine"},
        headers=alice,
    )
    problem_of(stolen, 404, "record_not_found")
    bad = client.post(
        "/v1/me/disputes", json={"record_id": mine["record_id"], "reason": "meh"}, headers=alice
    )
    assert ("reason", "schema") in {(e["field"], e["rule"]) for e in bad.get_json()["errors"]}

    filed = client.post(
        "/v1/me/disputes",
        json={"record_id": mine["record_id"], "reason": "already_paid", "text": "paid in May"},
        headers=alice,
    )
    assert filed.status_code == 201, filed.get_data(as_text=True)
    assert filed.get_json()["status"] == "open" and filed.get_json()["text"] == "paid in May"
    listed = client.get("/v1/me/disputes", headers=alice).get_json()
    assert "not_mine" in listed["reasons"] and len(listed["disputes"]) == 1
    assert client.get("/v1/me/disputes", headers=bob).get_json()["disputes"] == []
    again = client.get("/v1/me/records", headers=alice).get_json()["records"]
    assert next(r for r in again if r["record_id"] == mine["record_id"])["under_dispute"]


def test_consents_are_issued_listed_and_revoked(
    client: FlaskClient,
    session: Session,
    material: KeyMaterial,
    people: dict[str, Any],
    clock: Clock,
) -> None:
    alice = token_for(client, session, material, ALICE, ALICE_PHONE)
    bob = token_for(client, session, material, BOB, BOB_PHONE)
    until = (clock() + dt.timedelta(days=7)).isoformat()
    issued = client.post(
        "/v1/me/consents", json={"institution": "BANKB", "expires_at": until}, headers=alice
    )
    assert issued.status_code == 201, issued.get_data(as_text=True)
    body = issued.get_json()
    assert len(body["code"]) == 14 and body["consent"]["state"] == "live"
    ref = body["consent"]["consent_id"]

    row = session.scalar(select(Consent).where(Consent.ref == ref))
    assert row is not None
    _inquiry(session, "BANKB", "answered", borrower_index=row.borrower_index, consent_id=row.id)
    [listed] = client.get("/v1/me/consents", headers=alice).get_json()["consents"]
    assert [u["institution"] for u in listed["used_by"]] == ["BANKB"]

    problem_of(client.delete(f"/v1/me/consents/{ref}", headers=bob), 404, "consent_not_found")
    assert client.delete(f"/v1/me/consents/{ref}", headers=alice).status_code == 204
    [listed] = client.get("/v1/me/consents", headers=alice).get_json()["consents"]
    assert listed["state"] == "revoked"

    too_far = (clock() + dt.timedelta(days=31)).isoformat()
    late = client.post(
        "/v1/me/consents", json={"institution": "BANKB", "expires_at": too_far}, headers=alice
    )
    problem_of(late, 422, "validation_failed")


def test_statements_on_the_file_and_on_a_record(
    client: FlaskClient, session: Session, material: KeyMaterial, people: dict[str, Any]
) -> None:
    alice = token_for(client, session, material, ALICE, ALICE_PHONE)
    record = client.get("/v1/me/records", headers=alice).get_json()["records"][0]
    put = client.put("/v1/me/statements", json={"text": "我已还清全部欠款"}, headers=alice)
    assert put.status_code == 200, put.get_data(as_text=True)
    put = client.put(
        "/v1/me/statements",
        json={"record_id": record["record_id"], "text": "Card was stolen in 2024."},
        headers=alice,
    )
    listed = put.get_json()["statements"]
    assert [s["record_id"] for s in listed] == [None, record["record_id"]]
    shown = client.get("/v1/me/records", headers=alice).get_json()["records"]
    assert next(r for r in shown if r["record_id"] == record["record_id"])["statement"]
    too_long = client.put("/v1/me/statements", json={"text": "x" * 201}, headers=alice)
    problem_of(too_long, 422, "validation_failed")
    assert client.delete("/v1/me/statements", headers=alice).status_code == 204
    gone = client.get("/v1/me/statements", headers=alice).get_json()["statements"]
    assert [s["record_id"] for s in gone] == [record["record_id"]]


def test_the_signed_file_and_clearance_certificates(
    app: Flask,
    client: FlaskClient,
    session: Session,
    material: KeyMaterial,
    bank: Member,
    people: dict[str, Any],
) -> None:
    doc = people["alice"]
    settle = {
        "version": 1,
        "report_id": doc["report_id"] + "-s",
        "institution": "BANKA",
        "account_ref": doc["account_ref"],
        "kind": "settle",
        "sequence": 2,
        "settlement": {"type": "paid_in_full", "date": dt.date.today().isoformat()},
    }
    institution = session.scalar(select(Institution).where(Institution.code == "BANKA"))
    assert institution is not None
    Intake(material, Policy()).submit(
        session, institution, envelope(bank, settle), dt.datetime.now(dt.UTC)
    )
    alice = token_for(client, session, material, ALICE, ALICE_PHONE)
    [cert] = client.get("/v1/me/certificates", headers=alice).get_json()["certificates"]
    assert cert["certificate"]["institution"] == "BANKA"
    assert cert["certificate"]["account"] == "****4321"

    download = client.get("/v1/me/file", headers=alice)
    assert download.status_code == 200 and "attachment" in download.headers["Content-Disposition"]
    keys = {k["keyid"]: base64.b64decode(k["public_key"]) for k in _registry_keys(client)}
    parsed = dsse.parse_envelope(download.get_data())
    assert parsed.payload_type == FILE_PAYLOAD_TYPE
    dsse.verify_envelope(parsed, keys)
    content = json.loads(parsed.payload)
    assert content["national_id"] == ALICE
    assert [r["institution"] for r in content["records"]] == ["BANKB"]
    assert content["certificates"][0]["institution"] == "BANKA"
    assert BOB not in parsed.payload.decode()


def _registry_keys(client: FlaskClient) -> list[dict[str, str]]:
    keys: list[dict[str, str]] = client.get("/v1/registry-keys").get_json()["keys"]
    return keys


def test_the_openapi_document_describes_the_borrower_api(client: FlaskClient) -> None:
    spec = client.get("/v1/openapi.json").get_json()
    for path in ("/v1/me/signin", "/v1/me/records", "/v1/me/consents/{consent_id}"):
        assert path in spec["paths"]
    assert "borrowerToken" in spec["components"]["securitySchemes"]
    assert spec["paths"]["/v1/me/records"]["get"]["security"] == [{"borrowerToken": []}]


def test_a_trusted_proxy_names_the_client(
    settings: Settings, engine: object, clock: Clock, people: dict[str, Any]
) -> None:
    """Behind one trusted proxy the last X-Forwarded-For hop is the client; earlier ones lie."""
    from api import create_app

    app = create_app(settings.with_overrides(trusted_proxies=1), clock=clock)
    client = app.test_client()
    try:
        for serial in range(10, 30):
            forged = f"198.51.100.{serial}, 203.0.113.5"
            client.post(
                "/v1/me/signin",
                json={"national_id": national_id(serial)},
                headers={"X-Forwarded-For": forged},
            )
        limited = client.post(
            "/v1/me/signin",
            json={"national_id": national_id(50)},
            headers={"X-Forwarded-For": "198.51.100.99, 203.0.113.5"},
        )
        problem_of(limited, 429, "rate_limited")
        other = client.post(
            "/v1/me/signin",
            json={"national_id": national_id(51)},
            headers={"X-Forwarded-For": "203.0.113.6"},
        )
        assert other.status_code == 202
    finally:
        app.extensions["registry"].engine.dispose()
