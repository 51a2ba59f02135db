"""Running it for real: readiness, operator-only metrics, JSON logs without personal data."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from api.observability import watch_clearings
from crypto import ed25519
from factories import Member, admit, envelope, national_id, new_key, payload, signed, submit
from registry import operators
from registry.clearing import Clearer, ClearReason, note_clearings
from registry.models import Delinquency
from registry.policy import Policy
from registry.secrets import load_key_material
from registry.settings import Settings
from registry.sweep_log import record_sweep


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture
def operator(session: Session) -> Member:
    key, keyid = new_key()
    pem = ed25519.public_key_to_pem(ed25519.public_key_raw(key))
    operators.add(session, "ops-metrics", pem, dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    session.commit()
    return Member(code="ops-metrics", key=key, keyid=keyid)


def samples(
    client: FlaskClient, operator: Member
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = signed(client, operator, "GET", "/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


# --- readiness ---------------------------------------------------------------------------


def test_ready_when_the_database_answers_at_the_head(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ready",
        "checks": {"database": "ok", "schema": "at_head"},
    }
    assert client.get("/healthz").status_code == 200


def test_not_ready_when_the_schema_is_behind(settings: Settings, tmp_path: Path) -> None:
    behind = settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    app = create_app(behind)
    response = app.test_client().get("/readyz")
    app.extensions["registry"].engine.dispose()
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == "not_ready"
    assert body["checks"] == {"database": "ok", "schema": "not_at_head"}
    assert response.headers["Retry-After"].isdigit()


def test_not_ready_when_the_database_is_unreachable(settings: Settings) -> None:
    gone = settings.with_overrides(
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"
    )
    app = create_app(gone)
    response = app.test_client().get("/readyz")
    app.extensions["registry"].engine.dispose()
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == "unreachable"


# --- /metrics ----------------------------------------------------------------------------


def test_metrics_are_for_operators_only(
    client: FlaskClient, bank: Member, operator: Member
) -> None:
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.get_json()["code"] == "request_missing_signature"
    as_member = signed(client, bank, "GET", "/metrics")
    assert as_member.status_code == 401
    assert as_member.get_json()["code"] == "request_unknown_key"
    assert signed(client, operator, "GET", "/metrics").status_code == 200


def test_requests_and_reports_are_counted_by_endpoint_and_reason(
    client: FlaskClient, bank: Member, operator: Member
) -> None:
    before = samples(client, operator)
    assert submit(client, bank, payload(bank)).status_code == 201
    assert submit(client, bank, payload(bank, days_past_due=2)).status_code == 422
    after = samples(client, operator)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    reports = "registry_reports_total"
    assert delta(reports, outcome="accepted", reason="new", via="single") == 1
    assert delta(reports, outcome="refused", reason="validation_failed", via="single") == 1
    requests = "registry_http_requests_total"
    assert delta(requests, endpoint="members.Reports", method="POST", status="201") == 1
    assert delta(requests, endpoint="members.Reports", method="POST", status="422") == 1
    latency = "registry_http_request_duration_seconds_count"
    assert delta(latency, endpoint="members.Reports", method="POST") == 2


def test_batch_outcomes_and_clearings_are_counted(
    client: FlaskClient, bank: Member, operator: Member
) -> None:
    doc = payload(bank)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    settle = {
        "version": 1,
        "report_id": f"{doc['report_id']}-s",
        "institution": "BANKA",
        "account_ref": doc["account_ref"],
        "sequence": 2,
        "kind": "settle",
        "settlement": {"type": "paid_in_full", "date": today},
    }
    body = json.dumps(
        {"envelopes": [envelope(bank, doc).decode(), envelope(bank, settle).decode(), "[]"]}
    ).encode()
    before = samples(client, operator)
    assert signed(client, bank, "POST", "/v1/reports/batch", body).status_code == 200
    after = samples(client, operator)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    reports = "registry_reports_total"
    assert delta(reports, outcome="accepted", reason="new", via="batch") == 2
    assert delta(reports, outcome="refused", reason="envelope_malformed", via="batch") == 1
    assert delta("registry_clearings_total", reason="settled") == 1


def cleared_fraud() -> float:
    return REGISTRY.get_sample_value("registry_clearings_total", {"reason": "fraud"}) or 0.0


def watched(engine: Engine) -> sessionmaker[Session]:
    sessions = sessionmaker(bind=engine)
    watch_clearings(sessions)
    return sessions


def test_clearings_are_counted_once_on_commit_and_forgotten_otherwise(engine: Engine) -> None:
    sessions = watched(engine)
    start = cleared_fraud()
    with sessions() as s:
        s.begin()
        note_clearings(s, ClearReason.FRAUD, 2)
        s.rollback()
        assert cleared_fraud() == start
        s.begin()
        note_clearings(s, ClearReason.FRAUD, 2)
        note_clearings(s, ClearReason.FRAUD, 1)
        assert cleared_fraud() == start
        s.commit()
        assert cleared_fraud() == start + 3
        with s.begin():
            pass
        assert cleared_fraud() == start + 3
        s.begin()
        note_clearings(s, ClearReason.FRAUD, 5)
        s.close()  # ends the transaction without a commit and without a rollback event
        with s.begin():
            pass
    assert cleared_fraud() == start + 3


def test_clearings_in_savepoints_count_only_when_the_outer_transaction_commits(
    engine: Engine,
) -> None:
    sessions = watched(engine)
    start = cleared_fraud()
    with sessions() as s, s.begin():
        note_clearings(s, ClearReason.FRAUD, 1)
        undone = s.begin_nested()
        note_clearings(s, ClearReason.FRAUD, 10)
        inner = s.begin_nested()
        note_clearings(s, ClearReason.FRAUD, 100)
        inner.commit()
        undone.rollback()
        with s.begin_nested():
            note_clearings(s, ClearReason.FRAUD, 1000)
        assert cleared_fraud() == start  # a released savepoint is not a commit
    assert cleared_fraud() == start + 1001
    with sessions() as s:
        s.begin()
        with s.begin_nested():
            note_clearings(s, ClearReason.FRAUD, 7)
        s.rollback()
    assert cleared_fraud() == start + 1001


def test_a_clearing_its_savepoint_undid_is_not_counted(
    client: FlaskClient, bank: Member, engine: Engine, settings: Settings
) -> None:
    assert submit(client, bank, payload(bank)).status_code == 201
    clearer = Clearer(load_key_material(settings), Policy())
    sessions = watched(engine)
    start = cleared_fraud()

    def clear_the_record(session: Session) -> None:
        record = session.scalars(select(Delinquency)).one()
        account_ref = clearer.account_ref(record)
        now = dt.datetime.now(dt.UTC)
        clearer.clear(session, record, ClearReason.FRAUD, now, account_ref=account_ref)

    with sessions() as s, s.begin():
        savepoint = s.begin_nested()
        clear_the_record(s)
        savepoint.rollback()
    assert cleared_fraud() == start
    with sessions() as s, s.begin():
        assert s.scalar(select(func.count()).select_from(Delinquency)) == 1
        with s.begin_nested():
            clear_the_record(s)
    assert cleared_fraud() == start + 1


def test_inquiry_counter_takes_purpose_and_outcome(client: FlaskClient, operator: Member) -> None:
    from api.observability import count_inquiry

    before = samples(client, operator)
    count_inquiry("account_review", "answered")
    after = samples(client, operator)
    name, labels = "registry_inquiries_total", {"purpose": "account_review", "outcome": "answered"}
    assert value(after, name, **labels) - value(before, name, **labels) == 1


def test_metrics_show_what_the_scheduled_sweeps_cleared(
    client: FlaskClient, session: Session, operator: Member
) -> None:
    """The sweeper runs in ``registry worker`` (its own process, often its own host): what it
    cleared reaches ``/metrics`` through the database, not this process's counters."""
    finished = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
    with session.begin():
        record_sweep(session, {"retention": 3, "max_age": 1}, finished)
        record_sweep(session, {"retention": 2, "max_age": 0}, finished + dt.timedelta(minutes=5))

    found = samples(client, operator)
    assert value(found, "registry_sweeper_cleared_total", rule="retention") == 5
    assert value(found, "registry_sweeper_cleared_total", rule="max_age") == 1
    assert value(found, "registry_sweeper_sweeps_total", rule="retention") == 2
    last = value(found, "registry_sweeper_last_finished_timestamp_seconds", rule="max_age")
    assert last == (finished + dt.timedelta(minutes=5)).timestamp()


def test_metrics_never_carry_personal_data_or_paths(
    client: FlaskClient, bank: Member, operator: Member
) -> None:
    doc = payload(bank)
    submit(client, bank, doc)
    signed(client, bank, "GET", f"/v1/receipts/{doc['report_id']}")
    signed(client, bank, "GET", "/v1/receipts/ACCT-9999-no-such")
    text = signed(client, operator, "GET", "/metrics").get_data(as_text=True)
    for secret in (doc["report_id"], doc["account_ref"], national_id(1), "/v1/", "ACCT-9999"):
        assert secret not in text
    assert 'endpoint="members.Receipt"' in text


# --- JSON logs ---------------------------------------------------------------------------


def test_each_request_is_one_json_log_line_without_personal_data(
    client: FlaskClient, bank: Member, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = payload(bank)
    capsys.readouterr()
    response = submit(client, bank, doc, extra_headers={"X-Request-Id": "lb-0123456789"})
    assert response.headers["X-Request-Id"] == "lb-0123456789"
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    [request_line] = [line for line in lines if line["logger"] == "registry.request"]
    assert request_line["endpoint"] == "members.Reports"
    assert request_line["status"] == 201 and request_line["method"] == "POST"
    assert request_line["request_id"] == "lb-0123456789"
    assert request_line["duration_ms"] >= 0
    assert {"time", "level", "message"} <= set(request_line)
    text = json.dumps(lines, ensure_ascii=False)
    for secret in (doc["report_id"], doc["account_ref"], national_id(1), "张三", "+86"):
        assert secret not in text


def test_an_unsafe_incoming_request_id_is_replaced(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"X-Request-Id": "<script>11010519491231002X"})
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["X-Request-Id"])


def test_a_failure_is_logged_by_type_and_place_not_by_message(
    client: FlaskClient,
    bank: Member,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from registry import receipts

    def broken(*_args: object, **_kwargs: object) -> bytes:
        raise ValueError(f"secret {national_id(7)}")

    monkeypatch.setattr(receipts, "find", broken)
    capsys.readouterr()
    response = signed(client, bank, "GET", "/v1/receipts/whatever-0001")
    assert response.status_code == 500
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(line["level"] == "ERROR" and "ValueError" in line["message"] for line in lines)
    assert all(line.get("request_id") for line in lines)
    assert national_id(7) not in err
