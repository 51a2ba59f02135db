"""Who may call member endpoints: RFC 9421 signatures, key states, member states, replay."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from conftest import Clock, sqlite_write_lock_is_free
from crypto import httpsig
from factories import Member, admit, envelope, national_id, new_key, payload, signed
from registry import authn, members
from registry.intake import Checked, Intake
from registry.models import RequestNonce
from registry.settings import Settings

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


# --- one transaction per request: the nonce commits with the work, or on its own ----------


class Statements:
    """Counts what an engine sends: statements, and commits of transactions that wrote.

    A commit that ends a read (SQLite's lock-free authentication read) writes nothing to
    disk, so it is counted apart, in ``read_commits``.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine, self.sql, self.commits, self.read_commits = engine, list[str](), 0, 0
        self._wrote = False

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.sql.append(statement)
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            self._wrote = True

    def _commit(self, _conn: Any) -> None:
        if self._wrote:
            self.commits += 1
        else:
            self.read_commits += 1
        self._wrote = False

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)


def nonces(session: Session) -> list[str]:
    """The stored nonces, read in a transaction of their own (a fresh snapshot each time)."""
    found = list(session.scalars(select(RequestNonce.nonce)))
    session.rollback()
    return found


def test_an_accepted_report_commits_its_nonce_and_its_work_in_one_transaction(
    app: Flask, client: FlaskClient, bank: Member, session: Session
) -> None:
    raw = envelope(bank, payload(bank))
    with Statements(app.extensions["registry"].engine) as seen:
        response = signed(client, bank, "POST", "/v1/reports", raw, nonce="one-commit-0123456789")
    assert response.status_code == 201, response.get_data(as_text=True)
    assert seen.commits == 1
    assert nonces(session) == ["one-commit-0123456789"]


@pytest.mark.sqlite_only
def test_a_report_is_verified_and_validated_while_other_requests_can_write(
    app: Flask, client: FlaskClient, bank: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has one write lock: the report's first write (its nonce) takes it, not the
    authentication before it, so other workers write while this one checks signatures."""
    path = app.extensions["registry"].engine.url.database
    free: list[bool] = []
    original = Intake.check

    def probing(self: Intake, *args: Any, **kwargs: Any) -> Checked:
        free.append(sqlite_write_lock_is_free(path))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Intake, "check", probing)
    raw = envelope(bank, payload(bank))
    with Statements(app.extensions["registry"].engine) as seen:
        response = signed(client, bank, "POST", "/v1/reports", raw, nonce="lock-free-0123456789")
    assert response.status_code == 201, response.get_data(as_text=True)
    assert free == [True]
    assert seen.commits == 1
    refused(
        signed(client, bank, "POST", "/v1/reports", raw, nonce="lock-free-0123456789"),
        401,
        "request_replayed",
    )


def test_a_refused_report_cannot_be_replayed_later(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    """Its work was rolled back with its nonce: the nonce is recorded again on its own."""
    raw = envelope(bank, payload(bank, penalty="999999.00"))
    nonce = "refused-then-replayed-0123456789"
    first = signed(client, bank, "POST", "/v1/reports", raw, nonce=nonce)
    assert first.status_code == 422, first.get_data(as_text=True)
    assert nonces(session) == [nonce]
    refused(signed(client, bank, "POST", "/v1/reports", raw, nonce=nonce), 401, "request_replayed")


def test_a_refused_inquiry_cannot_be_replayed_later(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    body = f'{{"purpose": "collection", "national_id": "{national_id(7)}"}}'.encode()
    nonce = "refused-inquiry-0123456789"
    first = signed(client, bank, "POST", "/v1/inquiries", body, nonce=nonce)
    assert first.status_code == 403, first.get_data(as_text=True)
    assert nonces(session) == [nonce]
    refused(
        signed(client, bank, "POST", "/v1/inquiries", body, nonce=nonce), 401, "request_replayed"
    )


def test_a_read_consumes_its_nonce_though_it_commits_nothing(
    client: FlaskClient, bank: Member, session: Session
) -> None:
    refused(get_receipt(client, bank, nonce="a-read-only-request-0123"), 404, "receipt_not_found")
    assert nonces(session) == ["a-read-only-request-0123"]


def _verified(bank: Member, nonce: str) -> httpsig.VerifiedRequest:
    return httpsig.VerifiedRequest(
        keyid=bank.keyid, created=int(time.time()), nonce=nonce, label="sig1"
    )


def _consume(
    session: Session, settings: Settings, verified: httpsig.VerifiedRequest, now: dt.datetime
) -> None:
    """What the HTTP layer does with a verified request's nonce: expect it, then write it."""
    authn.expect_nonce(session, settings, verified, now)
    authn.write_nonce(session)


def test_settle_nonce_records_a_nonce_whose_transaction_was_rolled_back(
    app: Flask, bank: Member, session: Session, clock: Clock
) -> None:
    svc = app.extensions["registry"]
    with svc.sessions() as work:
        _consume(work, svc.settings, _verified(bank, "rolled-back-0123456789"), clock())
        assert authn.nonce_pending(work)
        work.rollback()
        assert nonces(session) == []
        authn.settle_nonce(work)
        assert not authn.nonce_pending(work)
    assert nonces(session) == ["rolled-back-0123456789"]


def test_settle_nonce_adds_nothing_once_the_work_committed(
    app: Flask, bank: Member, session: Session, clock: Clock
) -> None:
    svc = app.extensions["registry"]
    with svc.sessions() as work:
        _consume(work, svc.settings, _verified(bank, "committed-0123456789"), clock())
        with work.begin_nested():  # a savepoint's release is not the nonce's commit
            pass
        assert authn.nonce_pending(work)
        work.commit()
        assert not authn.nonce_pending(work)
        with Statements(svc.engine) as seen:
            authn.settle_nonce(work)
    assert seen.sql == []
    assert nonces(session) == ["committed-0123456789"]


def test_settle_nonce_accepts_a_nonce_a_concurrent_copy_recorded_first(
    app: Flask, bank: Member, session: Session, clock: Clock
) -> None:
    svc = app.extensions["registry"]
    with svc.sessions() as work:
        _consume(work, svc.settings, _verified(bank, "raced-0123456789"), clock())
        work.rollback()
        with svc.sessions() as other:
            _consume(other, svc.settings, _verified(bank, "raced-0123456789"), clock())
            other.commit()
        authn.settle_nonce(work)  # the duplicate means it is consumed: no error
    assert nonces(session) == ["raced-0123456789"]
