"""GET /v1/disputes, GET /v1/disputes/<ref>, POST /v1/disputes/<ref>/answer, as members see them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conftest import Clock
from factories import Member, admit, national_id, payload, signed, submit
from registry import disputes, members
from registry.models import Delinquency, Dispute
from registry.policy import Policy
from registry.secrets import KeyMaterial, load_key_material
from registry.settings import Settings


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture
def other(session: Session) -> Member:
    return admit(session, "BANKB")


@pytest.fixture
def material(settings: Settings) -> KeyMaterial:
    return load_key_material(settings)


def dispute_on(
    client: FlaskClient,
    session: Session,
    material: KeyMaterial,
    member: Member,
    *,
    account: str = "CARD-0001-4321",
    person: int = 1,
) -> str:
    doc = payload(member, account_ref=account)
    doc["borrower"]["national_id"] = national_id(person)
    assert submit(client, member, doc).status_code == 201
    session.commit()
    record = session.scalar(select(Delinquency.ref).order_by(Delinquency.id.desc()).limit(1))
    assert record is not None
    filed = disputes.file_dispute(
        session,
        material,
        Policy(),
        borrower_index=material.blind_index.digest("national_id", national_id(person)),
        record_ref=record,
        reason="wrong_amount",
        text="the amount is wrong",
        now=dt.datetime.now(dt.UTC),
    )
    session.commit()
    return filed.ref


def problem_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json()
    assert body["status"] == status and body["code"] == code
    return body


def rules(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["field"], e["rule"]) for e in body.get("errors", [])}


def post_answer(client: FlaskClient, member: Member, ref: str, body: Any, **kw: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return signed(client, member, "POST", f"/v1/disputes/{ref}/answer", raw, **kw)


def test_anonymous_is_401_and_suspended_is_403(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    ref = dispute_on(client, session, material, bank)
    for method, path in (
        ("GET", "/v1/disputes"),
        ("GET", f"/v1/disputes/{ref}"),
        ("POST", f"/v1/disputes/{ref}/answer"),
    ):
        problem_of(client.open(path, method=method), 401, "request_missing_signature")
    members.suspend(session, "BANKA", dt.datetime.now(dt.UTC))
    session.commit()
    problem_of(signed(client, bank, "GET", "/v1/disputes"), 403, "member_suspended")
    body = {"answer": "withdraw"}
    problem_of(post_answer(client, bank, ref, body), 403, "member_suspended")
    assert session.scalar(select(func.count()).select_from(Delinquency)) == 1


def test_disputes_come_a_page_at_a_time_and_a_cursor_must_be_one_returned(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    filed = [
        dispute_on(client, session, material, bank, account=f"PAGE-{n}", person=n)
        for n in range(1, 4)
    ]
    first = signed(client, bank, "GET", "/v1/disputes?limit=2").get_json()
    then = signed(client, bank, "GET", f"/v1/disputes?limit=2&after={first['next_cursor']}")
    second = then.get_json()
    assert [len(first["disputes"]), len(second["disputes"])] == [2, 1]
    assert [d["ref"] for d in first["disputes"] + second["disputes"]] == filed  # due order
    empty = signed(client, bank, "GET", f"/v1/disputes?after={second['next_cursor']}")
    assert empty.get_json() == {"disputes": [], "next_cursor": second["next_cursor"]}
    for query, rule in (("after=forged", ("after", "cursor")), ("limit=0", ("limit", "range"))):
        response = signed(client, bank, "GET", f"/v1/disputes?{query}")
        body = problem_of(response, 422, "validation_failed")
        assert rules(body) == {rule}


def test_a_member_lists_and_reads_its_own_disputes(
    client: FlaskClient, session: Session, bank: Member, other: Member, material: KeyMaterial
) -> None:
    mine = dispute_on(client, session, material, bank)
    theirs = dispute_on(client, session, material, other, account="OTHER-1", person=2)
    response = signed(client, bank, "GET", "/v1/disputes")
    assert response.status_code == 200
    [item] = response.get_json()["disputes"]
    assert item["ref"] == mine and item["account_ref"] == "CARD-0001-4321"
    assert (item["reason"], item["text"], item["status"]) == (
        "wrong_amount",
        "the amount is wrong",
        "open",
    )
    assert item["due_at"].endswith("Z") and item["suppressed"] is False
    text = response.get_data(as_text=True)
    for secret in ("+8613800138000", "13800138000", "长安街", "张三", national_id(1)):
        assert secret not in text
    one = signed(client, bank, "GET", f"/v1/disputes/{mine}")
    assert one.status_code == 200 and one.get_json() == item
    assert signed(client, bank, "GET", "/v1/disputes?status=open").get_json()["disputes"] == [item]
    assert signed(client, bank, "GET", "/v1/disputes?status=answered").get_json()["disputes"] == []
    # Another member's dispute answers exactly like one that does not exist.
    hidden = problem_of(
        signed(client, bank, "GET", f"/v1/disputes/{theirs}"), 404, "dispute_not_found"
    )
    missing = problem_of(
        signed(client, bank, "GET", f"/v1/disputes/{'0' * 32}"), 404, "dispute_not_found"
    )
    assert hidden == missing


def test_bad_queries_name_the_parameter(client: FlaskClient, bank: Member) -> None:
    body = problem_of(
        signed(client, bank, "GET", "/v1/disputes?status=closed"), 422, "validation_failed"
    )
    assert {f for f, _ in rules(body)} == {"status"}
    body = problem_of(
        signed(client, bank, "GET", "/v1/disputes?colour=red"), 422, "validation_failed"
    )
    assert {f for f, _ in rules(body)} == {"colour"}


def test_confirm_with_a_note_answers_once(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial, clock: Clock
) -> None:
    ref = dispute_on(client, session, material, bank)
    body = problem_of(
        post_answer(client, bank, ref, {"answer": "confirm"}), 422, "validation_failed"
    )
    assert rules(body) == {("note", "required")}
    clock.advance(days=2)
    at = int(clock().timestamp())
    response = post_answer(
        client, bank, ref, {"answer": "confirm", "note": "ledger checked"}, created=at
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    result = response.get_json()
    assert result["ref"] == ref and result["status"] == "answered"
    assert (result["answer"], result["record_cleared"]) == ("confirm", False)
    listed = signed(client, bank, "GET", f"/v1/disputes/{ref}", created=at).get_json()
    assert (listed["answer"], listed["answer_note"]) == ("confirm", "ledger checked")
    assert listed["answered_at"] == result["answered_at"]
    answered = dt.datetime.strptime(result["answered_at"], "%Y-%m-%dT%H:%M:%S%z")
    assert abs(answered - clock()) < dt.timedelta(minutes=1)  # the registry's clock, moved
    again = post_answer(client, bank, ref, {"answer": "confirm", "note": "again"}, created=at)
    problem_of(again, 409, "dispute_already_answered")


def test_withdraw_clears_the_record(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    ref = dispute_on(client, session, material, bank)
    response = post_answer(client, bank, ref, {"answer": "withdraw", "note": None})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["record_cleared"] is True
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Delinquency)) == 0
    assert session.scalar(select(func.count()).select_from(Dispute)) == 0
    problem_of(signed(client, bank, "GET", f"/v1/disputes/{ref}"), 404, "dispute_not_found")


def test_answer_correct_says_to_send_a_correct_report(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    ref = dispute_on(client, session, material, bank)
    body = problem_of(
        post_answer(client, bank, ref, {"answer": "correct"}), 422, "validation_failed"
    )
    assert rules(body) == {("answer", "correct_by_report")}


def test_another_member_cannot_answer(
    client: FlaskClient, session: Session, bank: Member, other: Member, material: KeyMaterial
) -> None:
    ref = dispute_on(client, session, material, bank)
    hidden = problem_of(
        post_answer(client, other, ref, {"answer": "withdraw"}), 404, "dispute_not_found"
    )
    missing = problem_of(
        post_answer(client, other, "0" * 32, {"answer": "withdraw"}), 404, "dispute_not_found"
    )
    assert hidden == missing
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Delinquency)) == 1
    assert session.scalar(select(Dispute.status)) == "open"


@pytest.mark.parametrize(
    ("raw", "status", "code", "field"),
    [
        (b'{"answer":"confirm","note":"ok","colour":"red"}', 422, "validation_failed", "colour"),
        (b'{"answer":"confirm","answer":"withdraw","note":"x"}', 400, "body_malformed", "body"),
        (b'{"answer":', 400, "body_malformed", "body"),
        (b'{"answer":"shrug"}', 422, "validation_failed", "answer"),
        (b'{"answer":"confirm","note":"a\\u0007b"}', 422, "validation_failed", "note"),
    ],
)
def test_bad_bodies_are_refused_naming_field_and_rule(
    client: FlaskClient,
    session: Session,
    bank: Member,
    material: KeyMaterial,
    raw: bytes,
    status: int,
    code: str,
    field: str,
) -> None:
    ref = dispute_on(client, session, material, bank)
    body = problem_of(post_answer(client, bank, ref, raw), status, code)
    assert {f for f, _ in rules(body)} == {field}
    assert all(rule for _, rule in rules(body))
    session.expire_all()
    assert session.scalar(select(Dispute.status)) == "open"


def test_the_openapi_document_describes_the_dispute_endpoints(client: FlaskClient) -> None:
    spec = client.get("/v1/openapi.json").get_json()
    paths = spec["paths"]
    assert {"get"} <= set(paths["/v1/disputes"])
    assert {"get"} <= set(paths["/v1/disputes/{ref}"])
    post = paths["/v1/disputes/{ref}/answer"]["post"]
    assert post["security"] == [{"httpMessageSignature": []}]
    assert {"200", "401", "403", "404", "409", "422"} <= set(post["responses"])
    schemas = spec["components"]["schemas"]
    answer = next(s for name, s in schemas.items() if name == "DisputeAnswer")
    assert answer["properties"]["answer"]["enum"] == ["confirm", "correct", "withdraw"]
