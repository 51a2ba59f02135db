"""/v1/subscriptions, /v1/webhook and /v1/alerts as a member sees them."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from conftest import Clock
from factories import Member, admit, national_id, new_key, payload, signed, submit
from registry import members, paging
from registry.models import Alert, AlertDelivery

TODAY = dt.datetime.now(dt.UTC).date()
WRONG_CHECK = national_id(1)[:17] + ("0" if national_id(1)[17] != "0" else "1")


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture
def watcher(session: Session) -> Member:
    return admit(session, "BANKB")


def call(
    client: FlaskClient, member: Member, method: str, path: str, body: Any = None
) -> TestResponse:
    raw = b"" if body is None else json.dumps(body).encode()
    return signed(client, member, method, path, raw)


def problem(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json()
    assert body["code"] == code and body["status"] == status and body["detail"]
    return body


def rules(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["field"], e["rule"]) for e in body.get("errors", [])}


def own_record(client: FlaskClient, member: Member, serial: int) -> dict[str, Any]:
    doc = payload(member, account_ref=f"OWN-{member.code}-{serial}")
    doc["borrower"] = {**doc["borrower"], "national_id": national_id(serial)}
    response = submit(client, member, doc)
    assert response.status_code == 201, response.get_data(as_text=True)
    return doc


def subscribe(client: FlaskClient, member: Member, serial: int) -> TestResponse:
    return call(client, member, "POST", "/v1/subscriptions", {"national_id": national_id(serial)})


def subscribed(client: FlaskClient, member: Member, serial: int) -> dict[str, Any]:
    own_record(client, member, serial)
    response = subscribe(client, member, serial)
    assert response.status_code == 201, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def raise_alerts(client: FlaskClient, reporter: Member, serial: int, n: int) -> None:
    """``n`` new delinquencies elsewhere on one borrower: one alert each for its subscribers."""
    for k in range(n):
        doc = payload(reporter, account_ref=f"R-{serial}-{k}-{secrets.token_hex(4)}")
        doc["borrower"] = {**doc["borrower"], "national_id": national_id(serial)}
        response = submit(client, reporter, doc)
        assert response.status_code == 201, response.get_data(as_text=True)


# --- access ------------------------------------------------------------------------------

ROUTES = [
    ("POST", "/v1/subscriptions"),
    ("GET", "/v1/subscriptions"),
    ("GET", "/v1/subscriptions/0123456789abcdef0123456789abcdef"),
    ("DELETE", "/v1/subscriptions/0123456789abcdef0123456789abcdef"),
    ("GET", "/v1/webhook"),
    ("PUT", "/v1/webhook"),
    ("DELETE", "/v1/webhook"),
    ("GET", "/v1/alerts"),
    ("GET", "/v1/alerts/0123456789abcdef0123456789abcdef"),
    ("POST", "/v1/alerts/0123456789abcdef0123456789abcdef/redeliver"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_anonymous_callers_get_401(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method, json={"national_id": national_id(1)})
    problem(response, 401, "request_missing_signature")
    assert response.headers["WWW-Authenticate"].startswith("Signature")


def test_suspended_members_get_403_and_unknown_keys_401(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    key, keyid = new_key()
    stranger = Member(code="NOBODY", key=key, keyid=keyid)
    problem(call(client, stranger, "GET", "/v1/alerts"), 401, "request_unknown_key")
    members.suspend(session, "BANKA", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    session.commit()
    for method, path in ROUTES:
        problem(
            call(client, bank, method, path, {} if method in ("POST", "PUT") else None),
            403,
            "member_suspended",
        )


# --- subscriptions -----------------------------------------------------------------------


def test_subscribing_needs_a_relationship(client: FlaskClient, bank: Member) -> None:
    problem(subscribe(client, bank, 30), 403, "no_relationship")
    own_record(client, bank, 30)
    first = subscribe(client, bank, 30)
    assert first.status_code == 201
    body = first.get_json()
    assert body["national_id_masked"] == "110101********" + national_id(30)[-4:]
    assert body["state"] == "active" and body["ended_at"] is None and len(body["ref"]) == 32
    assert national_id(30) not in first.get_data(as_text=True)
    again = subscribe(client, bank, 30)
    assert again.status_code == 200 and again.get_json()["ref"] == body["ref"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"national_id": WRONG_CHECK}, ("national_id", "gb11643_check")),
        ({"national_id": "1101011990030700"}, ("national_id", "gb11643_length")),
        ({"national_id": "110101199013070017"}, ("national_id", "gb11643_birth_date")),
        ({}, ("national_id", "schema")),
        ({"national_id": 110101199003070011}, ("national_id", "schema")),
        ({"national_id": national_id(1), "name": "x"}, ("name", "schema")),
    ],
)
def test_bad_subscription_bodies_are_422_naming_field_and_rule(
    client: FlaskClient, bank: Member, body: dict[str, Any], expected: tuple[str, str]
) -> None:
    answer = problem(
        call(client, bank, "POST", "/v1/subscriptions", body), 422, "validation_failed"
    )
    assert expected in rules(answer)
    assert WRONG_CHECK not in json.dumps(answer)


def test_a_member_lists_gets_and_ends_only_its_own_subscriptions(
    client: FlaskClient, bank: Member, watcher: Member
) -> None:
    mine = subscribed(client, bank, 31)
    theirs = subscribed(client, watcher, 32)
    listed = call(client, bank, "GET", "/v1/subscriptions").get_json()
    assert [s["ref"] for s in listed["subscriptions"]] == [mine["ref"]]
    problem(
        call(client, bank, "GET", f"/v1/subscriptions/{theirs['ref']}"),
        404,
        "subscription_not_found",
    )
    problem(
        call(client, bank, "DELETE", f"/v1/subscriptions/{theirs['ref']}"),
        404,
        "subscription_not_found",
    )
    assert call(client, watcher, "GET", f"/v1/subscriptions/{theirs['ref']}").status_code == 200

    ended = call(client, bank, "DELETE", f"/v1/subscriptions/{mine['ref']}")
    assert ended.status_code == 200
    assert (ended.get_json()["state"], ended.get_json()["end_reason"]) == ("ended", "unsubscribed")
    again = call(client, bank, "DELETE", f"/v1/subscriptions/{mine['ref']}").get_json()
    assert again["ended_at"] == ended.get_json()["ended_at"]
    # A new subscription after ending one is a new ref; the list shows both, with their state.
    renewed = subscribe(client, bank, 31).get_json()
    assert renewed["ref"] != mine["ref"]
    states = [
        s["state"]
        for s in call(client, bank, "GET", "/v1/subscriptions").get_json()["subscriptions"]
    ]
    assert states == ["ended", "active"]


def test_the_list_shows_a_subscription_ended_by_its_relationship(
    client: FlaskClient, bank: Member
) -> None:
    sub = subscribed(client, bank, 33)
    doc = own_record(client, bank, 34)  # another borrower, unaffected
    call(client, bank, "POST", "/v1/subscriptions", {"national_id": national_id(34)})
    withdraw = {
        "version": 1,
        "report_id": "withdraw-33",
        "institution": "BANKA",
        "account_ref": "OWN-BANKA-33",
        "sequence": 2,
        "kind": "withdraw",
        "withdrawal": {"reason": "fraud"},
    }
    assert submit(client, bank, withdraw).status_code == 201
    listed = call(client, bank, "GET", "/v1/subscriptions").get_json()["subscriptions"]
    by_ref = {s["ref"]: s for s in listed}
    assert by_ref[sub["ref"]]["state"] == "ended"
    assert by_ref[sub["ref"]]["end_reason"] == "relationship_ended"
    assert [s["state"] for s in listed if s["ref"] != sub["ref"]] == ["active"]
    assert doc["account_ref"] not in json.dumps(listed)


def test_subscription_pages_follow_the_cursor(client: FlaskClient, bank: Member) -> None:
    refs = [subscribed(client, bank, 40 + n)["ref"] for n in range(5)]
    seen, cursor = [], None
    for _ in range(4):
        query = "?limit=2" + (f"&after={cursor}" if cursor else "")
        page = call(client, bank, "GET", f"/v1/subscriptions{query}").get_json()
        seen += [s["ref"] for s in page["subscriptions"]]
        cursor = page["next_cursor"]
    assert seen == refs


# --- webhook -----------------------------------------------------------------------------


def test_a_member_registers_replaces_and_removes_its_webhook(
    client: FlaskClient, bank: Member, watcher: Member
) -> None:
    problem(call(client, bank, "GET", "/v1/webhook"), 404, "webhook_not_set")
    put = call(client, bank, "PUT", "/v1/webhook", {"url": "HTTPS://Hooks.Example:443/alerts?x=1"})
    assert put.status_code == 200
    assert put.get_json()["url"] == "https://hooks.example/alerts?x=1"
    assert call(client, bank, "GET", "/v1/webhook").get_json()["url"].endswith("?x=1")
    problem(call(client, watcher, "GET", "/v1/webhook"), 404, "webhook_not_set")
    call(client, bank, "PUT", "/v1/webhook", {"url": "https://other.example:8443"})
    assert call(client, bank, "GET", "/v1/webhook").get_json()["url"] == (
        "https://other.example:8443/"
    )
    assert call(client, bank, "DELETE", "/v1/webhook").status_code == 204
    problem(call(client, bank, "DELETE", "/v1/webhook"), 404, "webhook_not_set")


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://hooks.example/a", "https_only"),
        ("ftp://hooks.example/a", "https_only"),
        ("https://user:pw@hooks.example/a", "no_credentials"),
        ("https://hooks.example/a#frag", "no_fragment"),
        ("https:///a", "host_required"),
        ("https://hooks.example:99999/a", "format"),
        ("https://hooks.example/a b", "format"),
        ("https://127.0.0.1/a", "public_address"),
        ("https://10.1.2.3/a", "public_address"),
        ("https://169.254.169.254/latest", "public_address"),
        ("https://[::1]/a", "public_address"),
        ("https://hooks.example/" + "a" * 2048, "max_length"),
    ],
)
def test_unacceptable_webhook_urls_are_422(
    client: FlaskClient, bank: Member, url: str, rule: str
) -> None:
    answer = problem(
        call(client, bank, "PUT", "/v1/webhook", {"url": url}), 422, "validation_failed"
    )
    assert rules(answer) == {("url", rule)}


# --- alerts: pull API --------------------------------------------------------------------


def test_alerts_are_pulled_in_order_with_an_opaque_cursor(
    client: FlaskClient, bank: Member, watcher: Member
) -> None:
    sub = subscribed(client, watcher, 50)
    raise_alerts(client, bank, 50, 5)
    first = call(client, watcher, "GET", "/v1/alerts?limit=2").get_json()
    assert [a["seq"] for a in first["alerts"]] == [1, 2]
    assert all(a["subscription"] == sub["ref"] for a in first["alerts"])
    assert first["alerts"][0]["delivery"] is None  # no webhook: pull only
    assert first["alerts"][0]["type"] == "new_delinquency_elsewhere"
    cursor = first["next_cursor"]
    assert cursor != "2" and paging.decode_cursor(cursor) == (2,)
    rest = call(client, watcher, "GET", f"/v1/alerts?after={cursor}").get_json()
    assert [a["seq"] for a in rest["alerts"]] == [3, 4, 5]
    empty = call(client, watcher, "GET", f"/v1/alerts?after={rest['next_cursor']}").get_json()
    assert empty == {"alerts": [], "next_cursor": rest["next_cursor"]}
    raise_alerts(client, bank, 50, 1)
    later = call(client, watcher, "GET", f"/v1/alerts?after={rest['next_cursor']}").get_json()
    assert [a["seq"] for a in later["alerts"]] == [6]
    assert call(client, bank, "GET", "/v1/alerts").get_json()["alerts"] == []


@pytest.mark.parametrize(
    ("query", "field", "rule"),
    [
        ("after=not-a-cursor!", "after", "cursor"),
        ("after=eHl6", "after", "cursor"),  # valid base64 ("xyz"), not a cursor
        ("after=cDE=x", "after", "cursor"),
        ("limit=0", "limit", "range"),
        ("limit=501", "limit", "range"),
        ("limit=ten", "limit", "schema"),
        ("delivery=lost", "delivery", "one_of"),
        ("national_id=110101199003070017", "national_id", "schema"),
    ],
)
def test_bad_alert_queries_are_422(
    client: FlaskClient, bank: Member, query: str, field: str, rule: str
) -> None:
    answer = problem(call(client, bank, "GET", f"/v1/alerts?{query}"), 422, "validation_failed")
    assert (field, rule) in rules(answer)


def test_one_alert_by_event_id_and_never_another_members(
    client: FlaskClient, bank: Member, watcher: Member
) -> None:
    subscribed(client, watcher, 51)
    raise_alerts(client, bank, 51, 1)
    [alert] = call(client, watcher, "GET", "/v1/alerts").get_json()["alerts"]
    one = call(client, watcher, "GET", f"/v1/alerts/{alert['event_id']}")
    assert one.status_code == 200 and one.get_json() == alert
    problem(call(client, bank, "GET", f"/v1/alerts/{alert['event_id']}"), 404, "alert_not_found")
    problem(
        call(client, bank, "POST", f"/v1/alerts/{alert['event_id']}/redeliver"),
        404,
        "alert_not_found",
    )


def test_dead_letters_are_visible_and_can_be_redelivered(
    client: FlaskClient, bank: Member, watcher: Member, session: Session, clock: Clock
) -> None:
    subscribed(client, watcher, 52)
    raise_alerts(client, bank, 52, 1)  # before the webhook: pull only
    [early] = call(client, watcher, "GET", "/v1/alerts").get_json()["alerts"]
    problem(
        call(client, watcher, "POST", f"/v1/alerts/{early['event_id']}/redeliver"),
        409,
        "webhook_not_set",
    )
    assert (
        call(client, watcher, "PUT", "/v1/webhook", {"url": "https://h.example/"}).status_code
        == 200
    )
    raise_alerts(client, bank, 52, 2)
    session.expire_all()
    dead = session.scalars(select(AlertDelivery).order_by(AlertDelivery.id)).first()
    assert dead is not None
    dead.state, dead.attempts, dead.last_status, dead.last_error = "dead", 12, 503, "http_503"
    dead.dead_at = dt.datetime.now(dt.UTC)
    session.commit()

    letters = call(client, watcher, "GET", "/v1/alerts?delivery=dead").get_json()["alerts"]
    assert len(letters) == 1
    assert letters[0]["delivery"]["state"] == "dead"
    assert letters[0]["delivery"]["attempts"] == 12
    assert letters[0]["delivery"]["last_error"] == "http_503"
    pending = call(client, watcher, "GET", "/v1/alerts?delivery=pending").get_json()["alerts"]
    assert len(pending) == 1 and pending[0]["delivery"]["next_attempt_at"]

    again = call(client, watcher, "POST", f"/v1/alerts/{letters[0]['event_id']}/redeliver")
    assert again.status_code == 202
    assert again.get_json()["delivery"]["state"] == "pending"
    assert again.get_json()["delivery"]["attempts"] == 0
    assert again.get_json()["event_id"] == letters[0]["event_id"]
    assert call(client, watcher, "GET", "/v1/alerts?delivery=dead").get_json()["alerts"] == []
    # An alert written before the webhook existed can be pushed now too.
    pushed = call(client, watcher, "POST", f"/v1/alerts/{early['event_id']}/redeliver")
    assert pushed.get_json()["delivery"]["state"] == "pending"
    session.expire_all()
    assert session.scalar(select(Alert).where(Alert.event_id == early["event_id"])) is not None


def test_removing_the_webhook_cancels_pending_deliveries_but_keeps_the_alerts(
    client: FlaskClient, bank: Member, watcher: Member
) -> None:
    subscribed(client, watcher, 53)
    call(client, watcher, "PUT", "/v1/webhook", {"url": "https://h.example/"})
    raise_alerts(client, bank, 53, 2)
    assert call(client, watcher, "DELETE", "/v1/webhook").status_code == 204
    listed = call(client, watcher, "GET", "/v1/alerts").get_json()["alerts"]
    assert [a["delivery"]["state"] for a in listed] == ["cancelled", "cancelled"]
    assert {a["delivery"]["last_error"] for a in listed} == {"webhook_removed"}


def test_the_openapi_document_describes_the_early_warning_routes(client: FlaskClient) -> None:
    paths = client.get("/v1/openapi.json").get_json()["paths"]
    for path in (
        "/v1/subscriptions",
        "/v1/subscriptions/{ref}",
        "/v1/webhook",
        "/v1/alerts",
        "/v1/alerts/{event_id}",
        "/v1/alerts/{event_id}/redeliver",
    ):
        assert path in paths, path
    assert "national_id" not in json.dumps(paths["/v1/subscriptions"].get("get", {}))
