"""Secrets and personal data never reach a log line or an error body.

A full scenario runs through the API with every logger at DEBUG (SQLAlchemy's included):
reports accepted, resent and refused, inquiries answered and refused, a borrower signing in,
issuing a consent code, filing a dispute and a statement, an alert subscription, operator
queries, bad signatures and an unexpected exception whose message holds a national ID. Then
everything the registry wrote (log records with their arguments and extra fields, formatted
tracebacks, stderr) and every 4xx/5xx body is searched for: the national IDs, names, phones,
addresses and account references used; the master key, blind-index secret and signing keys
(raw bytes in base64 and hex, and their files); consent codes, bearer tokens and the values of
the requests' ``Signature`` headers.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from crypto import httpsig
from factories import (
    Member,
    envelope,
    inquire,
    national_id,
    payload,
    post_envelope,
    signed,
    submit,
)
from registry import notify
from registry.settings import Settings
from security.support import Actors, instance_secrets, leaks, raw_private, secret_forms

STRANGER = national_id(8)


class Recorder:
    """Keeps every error answer and every request signature the scenario produced."""

    def __init__(self) -> None:
        self.error_bodies: list[str] = []
        self.signatures: list[str] = []

    def __call__(self, response: TestResponse) -> TestResponse:
        if response.status_code >= 400:
            self.error_bodies.append(response.get_data(as_text=True))
        return response

    def sign(self, member: Member, method: str, path: str, body: bytes = b"") -> dict[str, str]:
        headers = httpsig.sign_request(
            method=method,
            url=f"http://localhost{path}",
            headers={},
            body=body,
            key=member.key,
            keyid=member.keyid,
            created=int(dt.datetime.now(dt.UTC).timestamp()),
            nonce=secrets.token_urlsafe(24),
        )
        self.signatures.append(headers["Signature"].split(":")[1])
        return headers


def log_texts(records: list[logging.LogRecord]) -> list[str]:
    formatter = logging.Formatter()
    out = []
    for record in records:
        out.append(record.getMessage())
        out.append(repr(vars(record)))
        if record.exc_info:
            out.append(formatter.formatException(record.exc_info))
    return out


def test_the_scanner_finds_a_planted_leak(caplog: pytest.LogCaptureFixture) -> None:
    """The scan can fail: a national ID, a key in hex and a name in an extra field are found."""
    key = b"\x01" * 32
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("registry.test").info("id %s", STRANGER, extra={"who": "欧阳锋"})
        logging.getLogger("registry.test").debug("key %s", key.hex())
    found = leaks(log_texts(caplog.records), [STRANGER, "欧阳锋", *secret_forms(key)])
    assert len(found) == 3, found


def _scenario(
    app: Flask,
    client: FlaskClient,
    session: Session,
    actors: Actors,
    record: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> list[str]:
    """Drive every audience through successes and failures; returns secrets it was given."""
    bank, lender, op = actors.bank_a, actors.bank_b, actors.operator
    seeded = actors.seeded
    nid = actors.borrower_id
    given: list[str] = [actors.borrower_token]
    bearer = {"Authorization": f"Bearer {actors.borrower_token}"}

    def call(member: Member, method: str, path: str, body: bytes = b"") -> TestResponse:
        headers = record.sign(member, method, path, body)
        if body:
            headers["Content-Type"] = "application/json"
        return record(client.open(path, method=method, data=body, headers=headers))

    # Reports: a new account, the same envelope again, the same id with other bytes, refusals.
    doc = payload(bank, account_ref="LOAN-SEC-0099", borrower=seeded["borrower"])
    raw = envelope(bank, doc)
    assert call(bank, "POST", "/v1/reports", raw).status_code == 201
    assert call(bank, "POST", "/v1/reports", raw).status_code == 200
    other = envelope(bank, {**doc, "penalty": "99.00"})
    assert call(bank, "POST", "/v1/reports", other).status_code == 409
    wrong_check = nid[:-1] + ("1" if nid[-1] == "0" else "0")
    broken = payload(bank, borrower={**seeded["borrower"], "national_id": wrong_check})
    assert record(submit(client, bank, broken)).status_code == 422
    greedy = payload(bank, account_ref="LOAN-SEC-0100", penalty="5000.00")
    greedy["borrower"] = seeded["borrower"]
    assert record(submit(client, bank, greedy)).status_code == 422
    assert record(submit(client, lender, doc)).status_code in (403, 422)

    # The borrower: their file, a consent code for the lender, a dispute, a statement.
    assert record(client.get("/v1/me/records", headers=bearer)).status_code == 200
    assert record(client.get("/v1/me/file", headers=bearer)).status_code == 200
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).isoformat()
    issued = record(
        client.post(
            "/v1/me/consents", json={"institution": "BANKB", "expires_at": expires}, headers=bearer
        )
    )
    assert issued.status_code == 201, issued.get_data(as_text=True)
    code = issued.get_json()["code"]
    given += [code, code.replace("-", "")]
    record_id = client.get("/v1/me/records", headers=bearer).get_json()["records"][0]["record_id"]
    statement = {"text": f"我已经还清了 {seeded['borrower']['phone']}"}
    assert record(client.put("/v1/me/statements", json=statement, headers=bearer)).status_code
    dispute = {"record_id": record_id, "reason": "other", "text": f"不是我 {nid}"}
    assert record(client.post("/v1/me/disputes", json=dispute, headers=bearer)).status_code

    # Inquiries: refused without consent, refused with a bad code, answered with the code.
    credit = {"national_id": nid, "purpose": "credit_application"}
    assert record(inquire(client, lender, credit)).status_code == 422
    bad = {**credit, "consent": {"kind": "consent_code", "code": "ABCD-EFGH-JKMN"}}
    assert record(inquire(client, lender, bad)).status_code == 403
    good = {**credit, "consent": {"kind": "consent_code", "code": code}}
    assert record(inquire(client, lender, good)).status_code == 200
    assert record(inquire(client, lender, {"national_id": nid[:10]})).status_code == 422

    # Sign-in with a one-time code (wrong first), an alert subscription, the operator.
    assert record(client.post("/v1/me/signin", json={"national_id": nid})).status_code == 202
    session.commit()
    sent = [m for m in notify.outbox(session, app.extensions["registry"].material,
            dt.datetime.now(dt.UTC)) if m.template == "signin_code"]  # fmt: skip
    session.commit()
    assert sent, "no sign-in code was queued"
    wrong = {"national_id": nid, "code": "000000"}
    assert record(client.post("/v1/me/signin/verify", json=wrong)).status_code == 401
    right = {"national_id": nid, "code": sent[-1].params["code"]}
    verified = record(client.post("/v1/me/signin/verify", json=right))
    assert verified.status_code == 200
    given.append(verified.get_json()["token"])
    body = json.dumps({"national_id": nid}).encode()
    assert call(bank, "POST", "/v1/subscriptions", body).status_code in (200, 201)
    for path in ("/v1/operator/inquiries", "/v1/operator/statistics", "/v1/operator/members"):
        assert call(op, "GET", path).status_code == 200

    # Failures: a forged signature, a replay, an unknown receipt, a bug that names a person.
    forged = record.sign(bank, "GET", "/v1/receipts/none-such-0001")
    forged["Signature"] = "sig1=:" + base64.b64encode(b"\0" * 64).decode() + ":"
    assert record(client.get("/v1/receipts/none-such-0001", headers=forged)).status_code == 401
    replay = record.sign(bank, "GET", f"/v1/receipts/{doc['report_id']}")
    for expected in (200, 401):
        answer = record(client.get(f"/v1/receipts/{doc['report_id']}", headers=replay))
        assert answer.status_code == expected
    assert call(bank, "GET", "/v1/receipts/none-such-0001").status_code == 404

    def explode(*_args: Any, **_kw: Any) -> bytes:
        raise RuntimeError(f"lookup failed for {nid} {seeded['borrower']['name']}")

    monkeypatch.setattr("api.members.views.receipts.find", explode)
    assert call(bank, "GET", f"/v1/receipts/{doc['report_id']}").status_code == 500
    assert record(signed(client, bank, "GET", "/v1/receipts/x-0000001")).status_code == 500
    assert record(post_envelope(client, bank, b"{}")).status_code == 400
    return given


def test_a_full_scenario_logs_no_personal_data_and_no_secret(
    app: Flask,
    client: FlaskClient,
    session: Session,
    settings: Settings,
    actors: Actors,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = Recorder()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")  # SQL and parameters, as with echo
    given = _scenario(app, client, session, actors, record, monkeypatch)
    captured = capsys.readouterr()
    loggers = {r.name for r in caplog.records}
    assert {"registry.request", "api.errors"} <= loggers, f"too little was logged: {loggers}"
    print(f"scanned {len(caplog.records)} log records from {sorted(loggers)}")

    people = [actors.seeded["borrower"]]
    personal = [v for person in people for v in person.values()]
    personal += [p.lstrip("+") for p in personal if p.startswith("+86")]
    personal += [actors.seeded["account_ref"], "LOAN-SEC-0099", "LOAN-SEC-0100"]
    keys = instance_secrets(Path(settings.instance_path))
    for member in (actors.bank_a, actors.bank_b, actors.operator):
        keys |= secret_forms(raw_private(member.key))
    needles = [*personal, *keys, *given, *record.signatures]
    assert len(keys) >= 8 and len(record.signatures) >= 10, "the scan would miss secrets"

    logs = [*log_texts(caplog.records), captured.err, captured.out]
    assert leaks(logs, needles) == [], "in the logs"
    assert leaks(record.error_bodies, needles) == [], "in error bodies"
