"""The delivery worker's bookkeeping, with a recording sender instead of the network."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from conftest import Clock
from factories import Member, admit, national_id, payload, signed, submit
from registry import members
from registry.cli import cli
from registry.db import make_session_factory
from registry.models import AlertDelivery
from registry.policy import Policy
from registry.secrets import load_key_material
from registry.settings import Settings
from registry.webhooks import Deliverer, Outcome, backoff_seconds, normalize_url

URL = "https://hooks.example/alerts"


class Recorder:
    """A sender that records what it was given and answers from a script."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[tuple[str, dict[str, str], bytes]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        self.sent.append((url, headers, body))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        return self.outcomes.pop(0) if self.outcomes else Outcome(ok=True, status=204)


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def alert_pending(client: FlaskClient, session: Session) -> Member:
    """BANKB watches a borrower with a webhook; BANKA's report leaves one delivery pending."""
    bank, watcher = admit(session, "BANKA"), admit(session, "BANKB")
    for member, ref in ((watcher, "OWN-B"), (bank, "THEIRS-A")):
        doc = payload(member, account_ref=ref)
        doc["borrower"] = {**doc["borrower"], "national_id": national_id(70)}
        assert submit(client, member, doc).status_code == 201
        if member is watcher:
            body = json.dumps({"national_id": national_id(70)}).encode()
            assert signed(client, watcher, "POST", "/v1/subscriptions", body).status_code == 201
            body = json.dumps({"url": URL}).encode()
            assert signed(client, watcher, "PUT", "/v1/webhook", body).status_code == 200
    return watcher


def worker(settings: Settings, clock: Clock, sender: Recorder, **policy: Any) -> Deliverer:
    return Deliverer(
        load_key_material(settings),
        settings,
        Policy(**policy),
        clock=clock,
        send=sender,
        jitter=lambda: 0.5,
    )


def only_delivery(session: Session) -> AlertDelivery:
    session.expire_all()
    row = session.scalars(select(AlertDelivery)).one()
    session.commit()
    return row


def test_backoff_doubles_from_the_base_and_stops_at_the_cap() -> None:
    policy = Policy(webhook_backoff_base_seconds=30, webhook_backoff_cap_seconds=300)
    assert [backoff_seconds(policy, n, 1.0) for n in range(1, 7)] == [30, 60, 120, 240, 300, 300]
    assert backoff_seconds(policy, 3, 0.0) == 60  # jitter spreads over the upper half
    assert backoff_seconds(policy, 10_000, 0.99) <= 300


def test_the_url_is_normalised_the_way_it_will_be_signed() -> None:
    assert normalize_url("HTTPS://A.Example:443", allow_private=False) == "https://a.example/"
    assert normalize_url("https://a.example:8443/x?y=1", allow_private=False) == (
        "https://a.example:8443/x?y=1"
    )
    assert normalize_url("https://[::1]:9/h", allow_private=True) == "https://[::1]:9/h"


def test_a_delivery_is_signed_sent_and_recorded(
    alert_pending: Member,
    settings: Settings,
    sessions: sessionmaker[Session],
    session: Session,
    clock: Clock,
) -> None:
    sender = Recorder()
    assert worker(settings, clock, sender).drain(sessions).delivered == 1
    [(url, headers, body)] = sender.sent
    assert url == URL and json.loads(body)["type"] == "new_delinquency_elsewhere"
    assert {"Content-Digest", "Signature-Input", "Signature"} <= set(headers)
    assert 'keyid="' + load_key_material(settings).signing_keyid + '"' in headers["Signature-Input"]
    row = only_delivery(session)
    assert (row.state, row.attempts, row.claim, row.last_status) == ("delivered", 1, None, 204)
    assert worker(settings, clock, Recorder()).drain(sessions).attempted == 0


def test_a_claimed_delivery_is_not_sent_twice_by_two_workers(
    alert_pending: Member,
    settings: Settings,
    sessions: sessionmaker[Session],
    session: Session,
    clock: Clock,
) -> None:
    slow = Recorder()
    slow.gate = threading.Event()
    first = threading.Thread(target=worker(settings, clock, slow).drain, args=(sessions,))
    first.start()
    try:
        assert slow.entered.wait(10)
        other = Recorder()
        assert worker(settings, clock, other).drain(sessions).attempted == 0
        assert other.sent == []
    finally:
        slow.gate.set()
        first.join(10)
    assert only_delivery(session).state == "delivered"


def test_an_expired_claim_is_taken_over_and_a_late_success_still_counts(
    alert_pending: Member,
    settings: Settings,
    sessions: sessionmaker[Session],
    session: Session,
    clock: Clock,
) -> None:
    slow = Recorder(Outcome(ok=True, status=200))
    slow.gate = threading.Event()
    first = threading.Thread(target=worker(settings, clock, slow).drain, args=(sessions,))
    first.start()
    try:
        assert slow.entered.wait(10)
        clock.advance(hours=1)  # the first worker's lease has run out: presumed dead
        failing = Recorder(Outcome(ok=False, status=503, error="http_503"))
        assert worker(settings, clock, failing).drain(sessions).retrying == 1
        assert only_delivery(session).attempts == 2
    finally:
        slow.gate.set()
        first.join(10)
    # The first worker did reach the member: the alert is delivered, whatever came after.
    row = only_delivery(session)
    assert (row.state, row.last_status) == ("delivered", 200)
    assert slow.sent[0][2] == failing.sent[0][2]


def test_a_failure_reported_under_a_lost_claim_changes_nothing(
    alert_pending: Member,
    settings: Settings,
    sessions: sessionmaker[Session],
    session: Session,
    clock: Clock,
) -> None:
    slow = Recorder(Outcome(ok=False, status=500, error="http_500"))
    slow.gate = threading.Event()
    first = threading.Thread(target=worker(settings, clock, slow).drain, args=(sessions,))
    first.start()
    try:
        assert slow.entered.wait(10)
        clock.advance(hours=1)
        assert worker(settings, clock, Recorder()).drain(sessions).delivered == 1
    finally:
        slow.gate.set()
        first.join(10)
    row = only_delivery(session)
    assert (row.state, row.attempts, row.last_error) == ("delivered", 2, None)


def test_dead_after_the_policy_attempts(
    alert_pending: Member,
    settings: Settings,
    sessions: sessionmaker[Session],
    session: Session,
    clock: Clock,
) -> None:
    down = Outcome(ok=False, error="connection_refused")
    sender = Recorder(*[down] * 5)
    deliver = worker(
        settings, clock, sender, webhook_max_attempts=4, webhook_backoff_base_seconds=1
    )
    states = []
    for _ in range(6):
        deliver.drain(sessions)
        states.append(only_delivery(session).state)
        clock.advance(seconds=10)
    assert states == ["pending", "pending", "pending", "dead", "dead", "dead"]
    assert len(sender.sent) == 4
    row = only_delivery(session)
    assert (row.attempts, row.last_error, row.last_status) == (4, "connection_refused", None)
    assert row.dead_at is not None


def test_a_suspended_member_gets_nothing_until_reinstated(
    alert_pending: Member,
    settings: Settings,
    sessions: sessionmaker[Session],
    session: Session,
    clock: Clock,
) -> None:
    members.suspend(session, "BANKB", dt.datetime.now(dt.UTC))
    session.commit()
    sender = Recorder()
    assert worker(settings, clock, sender).drain(sessions).attempted == 0
    members.reinstate(session, "BANKB")
    session.commit()
    assert worker(settings, clock, sender).drain(sessions).delivered == 1


def test_a_webhook_removed_after_the_claim_cancels_instead_of_sending(
    alert_pending: Member,
    settings: Settings,
    sessions: sessionmaker[Session],
    session: Session,
    clock: Clock,
    client: FlaskClient,
) -> None:
    deliver = worker(settings, clock, Recorder())
    jobs = deliver._claim(sessions, 10)
    assert signed(client, alert_pending, "DELETE", "/v1/webhook").status_code == 204
    row = only_delivery(session)
    assert (row.state, row.last_error) == ("cancelled", "webhook_removed")
    # The claimed job finishing later does not resurrect it.
    deliver._finish(sessions, jobs[0], Outcome(ok=False, status=500, error="http_500"))
    assert only_delivery(session).state == "cancelled"


def test_the_worker_and_the_deliver_command_drain_the_outbox(
    alert_pending: Member, settings: Settings, database_url: str, session: Session
) -> None:
    env = {
        "REGISTRY_INSTANCE": str(settings.instance_path),
        "REGISTRY_DATABASE_URL": database_url,
        "REGISTRY_WEBHOOK_TIMEOUT_SECONDS": "1",
    }
    # hooks.example does not resolve: the attempt fails, is counted and rescheduled.
    done = CliRunner().invoke(cli, ["alerts", "deliver", "--once"], env=env)
    assert done.exit_code == 0, done.output
    assert "webhooks: delivered=0 retrying=1 dead=0 cancelled=0" in done.output
    row = only_delivery(session)
    assert (row.attempts, row.last_error) == (1, "dns_error")

    swept = CliRunner().invoke(cli, ["worker", "--once"], env=env)
    assert swept.exit_code == 0, swept.output
    assert "subscriptions ended=0; alerts expired=0" in swept.output
    assert "webhooks:" not in swept.output  # nothing due: the retry waits for its back-off
