"""POST /v1/reports/batch: many signed reports, each accepted or refused on its own."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from conftest import sqlite_write_lock_is_free
from crypto import dsse
from factories import Member, admit, envelope, national_id, payload, post_envelope, signed
from registry import batch as registry_batch
from registry.batch import MAX_BATCH_BYTES, MAX_BATCH_REPORTS
from registry.batch_apply import Prepared
from registry.intake import Intake
from registry.models import ComplianceViolation, Delinquency, Institution, Report, Tombstone
from registry.receipts import RECEIPT_PAYLOAD_TYPE

BATCH = "/v1/reports/batch"


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


def batch_body(envelopes: list[bytes]) -> bytes:
    return json.dumps({"envelopes": [e.decode() for e in envelopes]}).encode()


def post_batch(client: FlaskClient, member: Member, envelopes: list[bytes]) -> dict[str, Any]:
    response = signed(client, member, "POST", BATCH, batch_body(envelopes))
    assert response.status_code == 200, response.get_data(as_text=True)
    document: dict[str, Any] = response.get_json()
    assert [r["index"] for r in document["results"]] == list(range(len(envelopes)))
    return document


def receipt_payload(client: FlaskClient, receipt: dict[str, Any]) -> dict[str, Any]:
    key = client.get("/v1/registry-keys").get_json()["keys"][0]
    raw = json.dumps(receipt, sort_keys=True, separators=(",", ":")).encode()
    parsed = dsse.parse_envelope(raw)
    assert parsed.payload_type == RECEIPT_PAYLOAD_TYPE
    dsse.verify_envelope(parsed, {key["keyid"]: base64.b64decode(key["public_key"])})
    document: dict[str, Any] = json.loads(parsed.payload)
    return document


def count(session: Session, model: type[Any]) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model)) or 0


def open_doc(member: Member, serial: int, **overrides: Any) -> dict[str, Any]:
    borrower = {
        "national_id": national_id(serial),
        "name": "张三",
        "phone": "+8613800138000",
    }
    return payload(member, account_ref=f"ACC-{serial:06d}", borrower=borrower, **overrides)


def test_one_bad_report_does_not_sink_the_others(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    good = [envelope(bank, open_doc(bank, i)) for i in range(3)]
    invalid = envelope(bank, open_doc(bank, 10, days_past_due=31))
    forged_doc = envelope(bank, open_doc(bank, 11))
    forged = forged_doc.replace(b'"sig":"', b'"sig":"A', 1)
    not_an_envelope = b'{"hello":"world"}'
    sent = [good[0], invalid, good[1], forged, not_an_envelope, good[2]]

    document = post_batch(client, bank, sent)

    statuses = [r["status"] for r in document["results"]]
    assert statuses == [201, 422, 201, 400, 400, 201]
    assert (document["accepted"], document["refused"]) == (3, 3)
    assert document["results"][1]["problem"]["code"] == "validation_failed"
    assert document["results"][3]["problem"]["code"] == "envelope_malformed"
    assert document["results"][4]["problem"]["code"] == "envelope_malformed"
    for index, raw in ((0, good[0]), (2, good[1]), (5, good[2])):
        result = document["results"][index]
        receipt = receipt_payload(client, result["receipt"])
        assert receipt["envelope_sha256"] == hashlib.sha256(raw).hexdigest()
        assert receipt["report_id"] == result["report_id"]
    assert count(session, Report) == 3
    assert count(session, Delinquency) == 3


def test_the_receipts_in_a_batch_answer_are_the_stored_bytes(
    client: FlaskClient, bank: Member
) -> None:
    raw = envelope(bank, open_doc(bank, 1))
    response = signed(client, bank, "POST", BATCH, batch_body([raw]))
    report_id = response.get_json()["results"][0]["report_id"]
    stored = signed(client, bank, "GET", f"/v1/receipts/{report_id}").data
    assert b'"receipt":' + stored + b"}" in response.data


def test_resending_the_whole_batch_returns_the_same_receipts_and_stores_nothing_new(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    sent = [envelope(bank, open_doc(bank, i)) for i in range(4)]
    first = post_batch(client, bank, sent)
    reports = count(session, Report)
    again = post_batch(client, bank, sent)
    assert [r["status"] for r in first["results"]] == [201] * 4
    assert [r["status"] for r in again["results"]] == [200] * 4
    assert [r["receipt"] for r in again["results"]] == [r["receipt"] for r in first["results"]]
    assert count(session, Report) == reports == 4


def test_a_single_submission_and_a_batch_share_idempotency(
    client: FlaskClient, bank: Member
) -> None:
    raw = envelope(bank, open_doc(bank, 1))
    single = post_envelope(client, bank, raw)
    document = post_batch(client, bank, [raw])
    assert single.status_code == 201
    assert document["results"][0]["status"] == 200
    as_bytes = json.dumps(document["results"][0]["receipt"], sort_keys=True, separators=(",", ":"))
    assert as_bytes.encode() == single.data


def test_a_report_id_reused_with_other_bytes_in_the_same_batch_is_a_conflict(
    client: FlaskClient, bank: Member
) -> None:
    doc = open_doc(bank, 1)
    first = envelope(bank, doc)
    changed = envelope(bank, {**doc, "collection_stage": "legal_action"})
    document = post_batch(client, bank, [first, first, changed])
    assert [r["status"] for r in document["results"]] == [201, 200, 409]
    assert document["results"][2]["problem"]["code"] == "report_id_conflict"


def test_a_cap_violation_in_a_batch_is_refused_and_counted_without_committing_others_early(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    over = envelope(bank, open_doc(bank, 2, penalty="100.01", overdue_interest="197.27"))
    sent = [envelope(bank, open_doc(bank, 1)), over, envelope(bank, open_doc(bank, 3))]
    document = post_batch(client, bank, sent)
    assert [r["status"] for r in document["results"]] == [201, 422, 201]
    problem = document["results"][1]["problem"]
    assert problem["code"] == "charging_cap_exceeded"
    assert {e["rule"] for e in problem["errors"]} == {"penalty_cap", "interest_cap"}
    session.expire_all()
    rules = sorted(session.scalars(select(ComplianceViolation.rule)))
    assert rules == ["interest_cap", "penalty_cap"]
    assert count(session, Report) == 2


def test_a_sequence_of_reports_for_one_account_applies_in_order_and_clears(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    doc = open_doc(bank, 1)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    settle = {key: doc[key] for key in ("version", "institution", "account_ref") if key in doc} | {
        "report_id": f"{doc['report_id']}-s",
        "sequence": 2,
        "kind": "settle",
        "settlement": {"type": "paid_in_full", "date": today},
    }
    stale = {**settle, "report_id": f"{doc['report_id']}-x", "sequence": 1}
    document = post_batch(
        client, bank, [envelope(bank, doc), envelope(bank, settle), envelope(bank, stale)]
    )
    statuses = [r["status"] for r in document["results"]]
    assert statuses == [201, 201, 409]
    assert receipt_payload(client, document["results"][1]["receipt"])["log_index"] is None
    assert document["results"][2]["problem"]["code"] == "account_cleared"
    assert count(session, Delinquency) == 0
    assert count(session, Tombstone) == 1


def test_a_batch_may_be_larger_than_a_single_report_body(client: FlaskClient, bank: Member) -> None:
    sent = [envelope(bank, open_doc(bank, i)) for i in range(1300)]
    body = batch_body(sent)
    assert len(body) > 1024 * 1024
    response = signed(client, bank, "POST", BATCH, body)
    assert response.status_code == 200
    assert response.get_json()["accepted"] == 1300


def test_the_single_report_endpoint_keeps_its_1_mib_limit(
    client: FlaskClient, bank: Member
) -> None:
    response = signed(client, bank, "POST", "/v1/reports", b"{" + b" " * (1024 * 1024) + b"}")
    assert response.status_code == 413


def test_a_body_over_the_batch_limit_is_refused_with_413(client: FlaskClient, bank: Member) -> None:
    body = b'{"envelopes":["' + b"x" * MAX_BATCH_BYTES + b'"]}'
    response = signed(client, bank, "POST", BATCH, body)
    assert response.status_code == 413
    assert response.get_json()["code"] == "payload_too_large"


def test_more_reports_than_the_limit_are_refused_naming_the_rule(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    real = envelope(bank, open_doc(bank, 1))
    body = batch_body([real] * (MAX_BATCH_REPORTS + 1))
    response = signed(client, bank, "POST", BATCH, body)
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["code"] == "batch_too_large"
    assert problem["errors"][0]["rule"] == "max_items"
    assert str(MAX_BATCH_REPORTS) in problem["errors"][0]["message"]
    assert count(session, Report) == 0


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (b"not json", "invalid_json"),
        (b'{"envelopes":[],"envelopes":[]}', "duplicate_key"),
        (b'{"reports":[]}', "batch_v1"),
        (b'{"envelopes":[{"payload":"x"}]}', "type_array"),
        (b'{"envelopes":["a"],"extra":1}', "batch_v1"),
        (b'{"envelopes":[1.5]}', "float_not_allowed"),
        (b"\xff\xfe", "invalid_utf8"),
    ],
)
def test_a_malformed_batch_is_refused_whole_naming_the_rule(
    client: FlaskClient, bank: Member, body: bytes, rule: str
) -> None:
    response = signed(client, bank, "POST", BATCH, body)
    assert response.status_code == 400
    problem = response.get_json()
    assert problem["code"] == "batch_malformed"
    assert problem["errors"][0]["rule"] == rule


def test_an_empty_batch_is_refused(client: FlaskClient, bank: Member) -> None:
    response = signed(client, bank, "POST", BATCH, b'{"envelopes":[]}')
    assert response.status_code == 422
    assert response.get_json()["code"] == "batch_empty"


def test_an_unsigned_batch_is_refused(client: FlaskClient, bank: Member) -> None:
    raw = envelope(bank, open_doc(bank, 1))
    response = client.post(BATCH, data=batch_body([raw]), content_type="application/json")
    assert response.status_code == 401
    assert response.get_json()["code"] == "request_missing_signature"


def test_another_members_envelopes_in_a_batch_are_refused_one_by_one(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    other = admit(session, "BANKB")
    theirs = envelope(other, open_doc(other, 1))
    document = post_batch(client, bank, [theirs, envelope(bank, open_doc(bank, 2))])
    assert [r["status"] for r in document["results"]] == [403, 201]
    assert document["results"][0]["problem"]["code"] == "envelope_signer_not_caller"


def test_the_batch_endpoint_is_described_in_openapi(client: FlaskClient) -> None:
    spec = client.get("/v1/openapi.json").get_json()
    operation = spec["paths"]["/v1/reports/batch"]["post"]
    assert operation["security"] == [{"httpMessageSignature": []}]
    schemas = spec["components"]["schemas"]
    assert {"BatchRequest", "BatchResponse", "BatchItem"} <= set(schemas)
    assert schemas["BatchRequest"]["properties"]["envelopes"]["maxItems"] == MAX_BATCH_REPORTS


@pytest.mark.sqlite_only
def test_a_batch_is_checked_while_other_requests_can_write(
    app: Flask, client: FlaskClient, bank: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has one write lock: a batch takes it when its first chunk is ready to be
    written, not at authentication, so other workers write while this one checks signatures
    and builds rows. The nonce goes out with the first chunk, in one commit, and is spent."""
    engine = app.extensions["registry"].engine
    path = engine.url.database
    free: list[bool] = []
    original = registry_batch.prepare

    def probing(intake: Intake, caller: Institution, item: Prepared, now: dt.datetime) -> None:
        free.append(sqlite_write_lock_is_free(path))
        original(intake, caller, item, now)

    monkeypatch.setattr(registry_batch, "prepare", probing)
    writes: list[str] = []
    commits: list[list[str]] = []

    def sent(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            writes.append(statement)

    def committed(_conn: object) -> None:
        if writes:  # a commit that ends a read wrote nothing
            commits.append(list(writes))
            writes.clear()

    body = batch_body([envelope(bank, open_doc(bank, i)) for i in range(3)])
    event.listen(engine, "before_cursor_execute", sent)
    event.listen(engine, "commit", committed)
    try:
        response = signed(client, bank, "POST", BATCH, body, nonce="batch-lock-free-0123456789")
    finally:
        event.remove(engine, "before_cursor_execute", sent)
        event.remove(engine, "commit", committed)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [r["status"] for r in response.get_json()["results"]] == [201] * 3
    assert free == [True] * 3
    assert len(commits) == 1, commits  # the nonce and the chunk, together
    replayed = signed(client, bank, "POST", BATCH, body, nonce="batch-lock-free-0123456789")
    assert replayed.status_code == 401
    assert replayed.get_json()["code"] == "request_replayed"
