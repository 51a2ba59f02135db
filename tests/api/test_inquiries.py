"""POST /v1/inquiries: purpose, consent, masking, the signed statement and the inquiry log."""

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
from werkzeug.test import TestResponse

from conftest import Clock
from crypto import dsse
from factories import (
    Member,
    admit,
    field_rules,
    inquire,
    national_id,
    payload,
    problem_of,
    submit,
)
from registry import consents
from registry.inquiries import STATEMENT_PAYLOAD_TYPE, Inquiries
from registry.models import BorrowerStatement, Consent, Delinquency, Dispute, Inquiry, QuotaUsage
from registry.policy import Policy
from registry.vault import Vault

ALICE = national_id(1)
BOB = national_id(2)


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture
def lender(session: Session) -> Member:
    return admit(session, "LENDERB")


def statement_of(client: FlaskClient, response: TestResponse) -> dict[str, Any]:
    """Verify the registry's signature on the answer and return its payload."""
    assert response.status_code == 200, response.get_data(as_text=True)
    key = client.get("/v1/registry-keys").get_json()["keys"][0]
    envelope = dsse.parse_envelope(response.data)
    assert envelope.payload_type == STATEMENT_PAYLOAD_TYPE
    dsse.verify_envelope(envelope, {key["keyid"]: base64.b64decode(key["public_key"])})
    document: dict[str, Any] = json.loads(envelope.payload)
    assert document["inquiry_id"] == response.headers["X-Inquiry-Id"]
    return document


def code_for(
    app: Flask,
    session: Session,
    nid: str,
    member: str,
    days: int = 7,
    now: dt.datetime | None = None,
) -> str:
    svc = app.extensions["registry"]
    now = now or dt.datetime.now(dt.UTC)
    _, code = consents.issue_code(
        session,
        svc.material,
        svc.policy,
        borrower_index=svc.inquiries.borrower_index(nid),
        institution_code=member,
        expires_at=now + dt.timedelta(days=days),
        now=now,
    )
    session.commit()
    return code


def inquiries(session: Session) -> list[Inquiry]:
    session.expire_all()
    rows = list(session.scalars(select(Inquiry).order_by(Inquiry.id)))
    session.commit()
    return rows


# --- purposes and consent ----------------------------------------------------------------


def test_a_credit_application_with_the_borrowers_consent_code_is_answered(
    app: Flask, client: FlaskClient, session: Session, bank: Member, lender: Member
) -> None:
    submit(client, bank, payload(bank))
    code = code_for(app, session, ALICE, "LENDERB")
    body = {"national_id": ALICE, "purpose": "credit_application"}
    response = inquire(client, lender, {**body, "consent": {"kind": "consent_code", "code": code}})
    document = statement_of(client, response)
    assert document["purpose"] == "credit_application"
    assert document["basis"] == "consent_code"
    assert document["summary"]["records"] == 1
    [logged] = inquiries(session)
    assert (logged.outcome, logged.purpose, logged.consent_kind) == (
        "answered",
        "credit_application",
        "consent_code",
    )
    assert logged.consent_id is not None


def test_a_consent_code_is_accepted_with_spaces_and_lower_case(
    app: Flask, client: FlaskClient, session: Session, lender: Member
) -> None:
    code = code_for(app, session, ALICE, "LENDERB").lower().replace("-", " ")
    consent = {"kind": "consent_code", "code": code}
    response = inquire(
        client, lender, {"national_id": ALICE, "purpose": "credit_application", "consent": consent}
    )
    assert response.status_code == 200


def test_a_credit_application_without_consent_is_refused_and_logged(
    client: FlaskClient, session: Session, lender: Member
) -> None:
    response = inquire(client, lender, {"national_id": ALICE, "purpose": "credit_application"})
    body = problem_of(response, 422, "validation_failed")
    assert ("consent", "required_for_credit_application") in field_rules(body)
    [logged] = inquiries(session)
    assert (logged.outcome, logged.refusal_code, logged.purpose) == (
        "refused",
        "validation_failed",
        "credit_application",
    )


@pytest.mark.parametrize(
    "whose",
    ["another member's", "another borrower's", "expired", "revoked", "made up"],
)
def test_a_consent_code_that_is_not_a_live_consent_for_this_caller_is_refused(
    app: Flask,
    client: FlaskClient,
    session: Session,
    clock: Clock,
    bank: Member,
    lender: Member,
    whose: str,
) -> None:
    member, nid = ("BANKA", ALICE) if whose == "another member's" else ("LENDERB", ALICE)
    if whose == "another borrower's":
        nid = BOB
    code = code_for(app, session, nid, member, days=1)
    if whose == "expired":
        clock.advance(days=2)
    if whose == "revoked":
        row = session.scalars(select(Consent)).one()
        consents.revoke(
            session, borrower_index=row.borrower_index, consent_ref=row.ref, now=clock()
        )
        session.commit()
    if whose == "made up":
        code = "ABCD-EFGH-JKMN"
    consent = {"kind": "consent_code", "code": code}
    body = {"national_id": ALICE, "purpose": "credit_application", "consent": consent}
    response = inquire(client, lender, body, created=int(clock().timestamp()))
    body = problem_of(response, 403, "consent_invalid")
    assert ("consent.code", "live_consent") in field_rules(body)
    assert code not in response.get_data(as_text=True)
    assert [i.outcome for i in inquiries(session)] == ["refused"]


def test_a_written_authorization_is_recorded_as_a_consent_and_logged(
    client: FlaskClient, session: Session, lender: Member
) -> None:
    form = hashlib.sha256(b"scanned signed form").hexdigest()
    consent = {
        "kind": "written_authorization",
        "reference": "APP-2026-0001",
        "form_sha256": form,
        "signed_on": dt.date.today().isoformat(),
    }
    response = inquire(
        client, lender, {"national_id": ALICE, "purpose": "credit_application", "consent": consent}
    )
    assert statement_of(client, response)["basis"] == "written_authorization"
    row = session.scalars(select(Consent)).one()
    assert (row.kind, row.reference, row.form_sha256) == (
        "written_authorization",
        "APP-2026-0001",
        form,
    )
    assert inquiries(session)[0].consent_reference == "APP-2026-0001"


def test_a_written_authorization_breaking_its_rules_names_each_field(
    client: FlaskClient, lender: Member
) -> None:
    consent = {
        "kind": "written_authorization",
        "reference": "bad ref with spaces",
        "form_sha256": "XYZ",
        "signed_on": (dt.date.today() + dt.timedelta(days=3)).isoformat(),
    }
    response = inquire(
        client, lender, {"national_id": ALICE, "purpose": "credit_application", "consent": consent}
    )
    assert field_rules(problem_of(response, 422, "validation_failed")) == {
        ("consent.reference", "reference_format"),
        ("consent.form_sha256", "sha256_hex"),
        ("consent.signed_on", "authorization_date_range"),
    }


def test_account_review_needs_an_own_record_or_a_live_consent(
    app: Flask, client: FlaskClient, session: Session, bank: Member, lender: Member
) -> None:
    submit(client, bank, payload(bank))
    review = {"national_id": ALICE, "purpose": "account_review"}
    assert statement_of(client, inquire(client, bank, review))["basis"] == "own_record"
    problem_of(inquire(client, lender, review), 403, "no_relationship")
    code_for(app, session, ALICE, "LENDERB")
    assert statement_of(client, inquire(client, lender, review))["basis"] == "live_consent"


def test_collection_needs_an_open_delinquency_of_the_caller(
    client: FlaskClient, bank: Member, lender: Member
) -> None:
    submit(client, bank, payload(bank))
    collect = {"national_id": ALICE, "purpose": "collection"}
    assert statement_of(client, inquire(client, bank, collect))["basis"] == "open_delinquency"
    problem_of(inquire(client, lender, collect), 403, "no_open_delinquency")


def test_a_held_record_that_is_not_shown_or_not_open_still_counts_as_it_should(
    client: FlaskClient, session: Session, bank: Member
) -> None:
    """Own record: any held record, suppressed too; open delinquency: an open one only."""
    submit(client, bank, payload(bank))
    record = session.scalars(select(Delinquency)).one()
    record.suppressed_at = dt.datetime.now(dt.UTC)
    session.commit()
    review = {"national_id": ALICE, "purpose": "account_review"}
    document = statement_of(client, inquire(client, bank, review))
    assert (document["basis"], document["records"]) == ("own_record", [])
    collect = {"national_id": ALICE, "purpose": "collection"}
    assert statement_of(client, inquire(client, bank, collect))["basis"] == "open_delinquency"
    record.status = "settled"
    session.commit()
    problem_of(inquire(client, bank, collect), 403, "no_open_delinquency")
    assert statement_of(client, inquire(client, bank, review))["basis"] == "own_record"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"national_id": ALICE, "purpose": "marketing"}, {("purpose", "one_of")}),
        (
            {"national_id": ALICE[:-1] + "0", "purpose": "collection"},
            {("national_id", "gb11643_check")},
        ),
        ({"purpose": "collection"}, {("national_id", "required")}),
        ({"national_id": ALICE, "purpose": "collection", "x": 1}, {("x", "unknown_field")}),
        ({"national_id": 110101, "purpose": "collection"}, {("national_id", "type_string")}),
        (
            {"national_id": ALICE, "purpose": "credit_application", "consent": {"kind": "oral"}},
            {("consent.kind", "one_of")},
        ),
    ],
)
def test_bad_requests_name_the_field_and_rule_and_are_logged_as_refused(
    client: FlaskClient,
    session: Session,
    lender: Member,
    body: dict[str, Any],
    errors: set[tuple[str, str]],
) -> None:
    response = inquire(client, lender, body)
    assert field_rules(problem_of(response, 422, "validation_failed")) == errors
    assert str(body.get("national_id")) not in response.get_data(as_text=True)
    [logged] = inquiries(session)
    assert logged.outcome == "refused"
    assert logged.purpose in ("collection", "credit_application", "invalid")


def test_duplicate_keys_and_non_json_are_refused_as_malformed(
    client: FlaskClient, lender: Member
) -> None:
    from factories import signed

    twice = f'{{"national_id":"{BOB}","national_id":"{ALICE}","purpose":"collection"}}'.encode()
    body = problem_of(signed(client, lender, "POST", "/v1/inquiries", twice), 400, "body_malformed")
    assert ("body", "duplicate_key") in field_rules(body)
    problem_of(signed(client, lender, "POST", "/v1/inquiries", b"\xff\xfe"), 400, "body_malformed")


# --- what the answer shows ---------------------------------------------------------------


def test_another_member_sees_masked_identity_masked_account_and_no_contact_data(
    app: Flask, client: FlaskClient, session: Session, bank: Member, lender: Member
) -> None:
    submit(client, bank, payload(bank, account_ref="CARD-0001-4321"))
    code = code_for(app, session, ALICE, "LENDERB")
    consent = {"kind": "consent_code", "code": code}
    response = inquire(
        client, lender, {"national_id": ALICE, "purpose": "credit_application", "consent": consent}
    )
    document = statement_of(client, response)
    assert document["subject"] == {
        "national_id": ALICE[:6] + "********" + ALICE[-4:],
        "name": "张*",
        "statement": None,
    }
    [record] = document["records"]
    assert record["account_ref"] == "****4321"
    assert "phone" not in record and "address" not in record and "name" not in record
    text = response.get_data(as_text=True)
    for secret in (ALICE, "张三", "13800138000", "长安街", "CARD-0001"):
        assert secret not in text


def test_the_reporting_member_sees_its_own_account_reference_whole(
    client: FlaskClient, bank: Member
) -> None:
    submit(client, bank, payload(bank, account_ref="CARD-0001-4321"))
    document = statement_of(
        client, inquire(client, bank, {"national_id": ALICE, "purpose": "account_review"})
    )
    assert document["records"][0]["account_ref"] == "CARD-0001-4321"


def test_the_summary_adds_up_records_at_several_members(
    app: Flask, client: FlaskClient, session: Session, bank: Member, lender: Member
) -> None:
    today = dt.date.today()
    submit(client, bank, payload(bank))
    submit(
        client,
        lender,
        payload(
            lender,
            product="online_loan",
            overdue_principal="2000.00",
            overdue_interest="0.00",
            penalty="0.00",
            days_past_due=100,
            first_delinquency_date=(today - dt.timedelta(days=99)).isoformat(),
            collection_stage="legal_action",
        ),
    )
    submit(
        client,
        lender,
        payload(
            lender,
            account_ref="USD-1",
            currency="USD",
            overdue_principal="10.00",
            overdue_interest="0.00",
            penalty="0.00",
        ),
    )
    document = statement_of(
        client, inquire(client, bank, {"national_id": ALICE, "purpose": "account_review"})
    )
    summary = document["summary"]
    assert summary["records"] == 3
    assert summary["institutions_with_open_delinquencies"] == 2
    assert summary["total_overdue"] == {"CNY": "12250.00", "USD": "10.00"}
    assert summary["max_days_past_due"] == 100
    assert summary["worst_classification"] == "substandard"
    assert summary["legal_action"] is True and summary["lost_contact"] is False
    assert summary["category"] == "severe"
    assert {r["classification"] for r in document["records"]} == {
        "special_mention",
        "substandard",
    }


def test_a_borrower_with_no_records_gets_an_empty_history_and_the_inquiry_is_logged(
    app: Flask, client: FlaskClient, session: Session, lender: Member
) -> None:
    code = code_for(app, session, BOB, "LENDERB")
    consent = {"kind": "consent_code", "code": code}
    response = inquire(
        client, lender, {"national_id": BOB, "purpose": "credit_application", "consent": consent}
    )
    document = statement_of(client, response)
    assert document["records"] == []
    assert document["summary"]["category"] == "clear"
    assert document["summary"]["total_overdue"] == {}
    [logged] = inquiries(session)
    assert logged.borrower_index == app.extensions["registry"].inquiries.borrower_index(BOB)


def test_recent_credit_application_inquiries_are_counted(
    app: Flask, client: FlaskClient, session: Session, clock: Clock, lender: Member
) -> None:
    def ask() -> TestResponse:
        code = code_for(app, session, BOB, "LENDERB", now=clock())
        consent = {"kind": "consent_code", "code": code}
        body = {"national_id": BOB, "purpose": "credit_application", "consent": consent}
        return inquire(client, lender, body, created=int(clock().timestamp()))

    assert ask().status_code == 200
    clock.advance(days=20)
    assert ask().status_code == 200
    clock.advance(days=25)
    summary = statement_of(client, ask())["summary"]
    assert (
        summary["credit_application_inquiries_30d"],
        summary["credit_application_inquiries_90d"],
    ) == (1, 2)


def test_disputes_statements_and_suppression_show_in_the_answer(
    app: Flask, client: FlaskClient, session: Session, clock: Clock, bank: Member
) -> None:
    submit(client, bank, payload(bank))
    submit(client, bank, payload(bank, account_ref="LOAN-2"))
    records = session.scalars(select(Delinquency).order_by(Delinquency.id)).all()
    vault = Vault(app.extensions["registry"].material.keyring)
    index = app.extensions["registry"].inquiries.borrower_index(ALICE)
    now = clock()

    def sealed(table: str, ref: str, text: str) -> tuple[Any, bytes]:
        row, key = vault.new_key(session, now)
        return row, vault.seal(key, table, "text", ref, text.encode())

    key, ct = sealed("disputes", "d1", "not mine")
    session.add(
        Dispute(
            ref="d1",
            delinquency_id=records[0].id,
            borrower_index=index,
            reason="not_mine",
            data_key=key,
            text_ct=ct,
            filed_at=now,
            due_at=now + dt.timedelta(days=20),
        )
    )
    key, ct = sealed("borrower_statements", "s1", "I was abroad")
    session.add(
        BorrowerStatement(
            ref="s1",
            borrower_index=index,
            delinquency_id=records[0].id,
            data_key=key,
            text_ct=ct,
            created_at=now,
        )
    )
    key, ct = sealed("borrower_statements", "s2", "Paying by plan")
    session.add(
        BorrowerStatement(ref="s2", borrower_index=index, data_key=key, text_ct=ct, created_at=now)
    )
    session.commit()
    review = {"national_id": ALICE, "purpose": "account_review"}
    document = statement_of(client, inquire(client, bank, review))
    assert document["subject"]["statement"] == "Paying by plan"
    first = next(r for r in document["records"] if r["record_id"] == records[0].ref)
    assert (first["under_dispute"], first["statement"]) == (True, "I was abroad")
    assert document["summary"]["disputes_open"] == 1
    records[1].suppressed_at = now
    session.commit()
    document = statement_of(client, inquire(client, bank, review))
    assert [r["record_id"] for r in document["records"]] == [records[0].ref]


def test_an_inquiry_never_shows_a_cleared_record(client: FlaskClient, bank: Member) -> None:
    doc = payload(bank)
    submit(client, bank, doc)
    settle = {k: doc[k] for k in ("version", "institution", "account_ref")}
    settle.update(
        report_id="r-settle-0001",
        kind="settle",
        sequence=2,
        settlement={"type": "paid_in_full", "date": dt.date.today().isoformat()},
    )
    assert submit(client, bank, settle).status_code == 201
    problem_of(
        inquire(client, bank, {"national_id": ALICE, "purpose": "account_review"}),
        403,
        "no_relationship",
    )


# --- evidence and quotas -----------------------------------------------------------------


def test_the_signed_request_is_kept_encrypted_as_evidence(
    app: Flask, client: FlaskClient, session: Session, bank: Member
) -> None:
    submit(client, bank, payload(bank))
    inquire(client, bank, {"national_id": ALICE, "purpose": "account_review"})
    [logged] = inquiries(session)
    assert logged.request_ct is not None and ALICE.encode() not in logged.request_ct
    evidence = app.extensions["registry"].inquiries.evidence_of(logged)
    assert evidence["method"] == "POST" and evidence["keyid"] == bank.keyid
    assert evidence["target_uri"] == "http://localhost/v1/inquiries"
    assert set(evidence["headers"]) >= {"Signature-Input", "Signature", "Content-Digest"}
    assert json.loads(base64.b64decode(evidence["body"]))["national_id"] == ALICE


@pytest.fixture
def tight_app(app: Flask) -> Flask:
    svc = app.extensions["registry"]
    svc.inquiries._policy = Policy(inquiries_per_day=2, inquiry_quota_overrides={"LENDERB": 3})
    return app


def test_the_daily_quota_is_answered_with_429_and_retry_after(
    tight_app: Flask, client: FlaskClient, session: Session, clock: Clock, bank: Member
) -> None:
    submit(client, bank, payload(bank))
    review = {"national_id": ALICE, "purpose": "account_review"}
    assert inquire(client, bank, review).status_code == 200
    assert inquire(client, bank, {"national_id": ALICE, "purpose": "nope"}).status_code == 422
    response = inquire(client, bank, review)
    problem_of(response, 429, "inquiry_quota_exhausted")
    retry = int(response.headers["Retry-After"])
    now = clock()
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    assert 0 < retry <= (midnight - now).total_seconds() + 2
    assert session.scalars(select(QuotaUsage.used)).one() == 2
    # Past its quota a member learns nothing else, not even that its request is invalid.
    problem_of(inquire(client, bank, {"purpose": "nope"}), 429, "inquiry_quota_exhausted")
    assert [i.outcome for i in inquiries(session)] == ["answered", "refused"]
    assert session.scalars(select(QuotaUsage.used)).one() == 2
    clock.advance(seconds=retry)
    assert inquire(client, bank, review, created=int(clock().timestamp())).status_code == 200


def test_quota_overrides_apply_per_member(
    tight_app: Flask, client: FlaskClient, lender: Member
) -> None:
    review = {"national_id": ALICE, "purpose": "collection"}
    statuses = [inquire(client, lender, review).status_code for _ in range(4)]
    assert statuses == [403, 403, 403, 429]


def test_an_answered_inquiry_commits_quota_nonce_and_log_in_one_transaction(
    app: Flask, client: FlaskClient, session: Session, bank: Member
) -> None:
    submit(client, bank, payload(bank))
    commits: list[object] = []
    engine = app.extensions["registry"].engine

    def count(conn: object) -> None:
        commits.append(conn)

    event.listen(engine, "commit", count)
    try:
        response = inquire(client, bank, {"national_id": ALICE, "purpose": "account_review"})
    finally:
        event.remove(engine, "commit", count)
    assert response.status_code == 200
    assert len(commits) == 1
    assert [i.outcome for i in inquiries(session)] == ["answered"]
    assert session.scalars(select(QuotaUsage.used)).one() == 1


def test_an_attempt_that_loses_the_last_quota_to_a_concurrent_one_is_refused_unlogged(
    tight_app: Flask,
    client: FlaskClient,
    session: Session,
    bank: Member,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check at the start passed; by the end a concurrent attempt took the last unit."""
    submit(client, bank, payload(bank))
    review = {"national_id": ALICE, "purpose": "account_review"}
    assert inquire(client, bank, review).status_code == 200
    assert inquire(client, bank, review).status_code == 200
    monkeypatch.setattr(Inquiries, "_refuse_past_quota", lambda *_args: None)
    problem_of(inquire(client, bank, review), 429, "inquiry_quota_exhausted")
    assert [i.outcome for i in inquiries(session)] == ["answered", "answered"]
    assert session.scalars(select(QuotaUsage.used)).one() == 2


def test_the_sweeper_forgets_inquiries_after_the_retention_period(
    app: Flask, client: FlaskClient, session: Session, clock: Clock, bank: Member
) -> None:
    submit(client, bank, payload(bank))
    inquire(client, bank, {"national_id": ALICE, "purpose": "account_review"})
    svc = app.extensions["registry"]
    assert svc.inquiries.expire(svc.sessions, clock()) == 0
    removed = svc.inquiries.expire(svc.sessions, clock() + dt.timedelta(days=731))
    assert removed == 1
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Inquiry)) == 0


def test_every_field_of_the_answer_about_the_borrower_has_a_masking_rule(
    client: FlaskClient, bank: Member
) -> None:
    from registry import masking

    submit(client, bank, payload(bank))
    document = statement_of(
        client, inquire(client, bank, {"national_id": ALICE, "purpose": "account_review"})
    )
    assert set(document["subject"]) <= set(masking.FIELDS)
    assert set(document["records"][0]) <= set(masking.FIELDS)


def test_every_logged_inquiry_is_reported_to_the_observer_after_commit(
    app: Flask, client: FlaskClient, bank: Member
) -> None:
    from registry.inquiries import Inquiries

    svc = app.extensions["registry"]
    seen: list[tuple[str, str]] = []
    svc.inquiries = Inquiries(svc.material, svc.policy, observer=lambda *e: seen.append(e))
    submit(client, bank, payload(bank))
    inquire(client, bank, {"national_id": ALICE, "purpose": "account_review"})
    inquire(client, bank, {"national_id": ALICE, "purpose": "astrology"})
    inquire(client, bank, {"national_id": BOB, "purpose": "collection"})
    assert seen == [
        ("account_review", "answered"),
        ("invalid", "refused"),
        ("collection", "refused"),
    ]
