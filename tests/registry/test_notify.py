"""The notification outbox: sealed messages, destinations, delivery, shredding, purge."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from borrowers import index_of, seed
from click.testing import CliRunner
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from factories import Member, admit, national_id
from registry import notify
from registry.cli import cli
from registry.errors import SetupError
from registry.models import DataKey, Institution, Notification
from registry.secrets import KeyMaterial, load_key_material
from registry.settings import Settings

NOW = dt.datetime.now(dt.UTC)
REQUIRED = ("signin_code", "dispute_filed", "dispute_answered", "dispute_expired", "record_cleared")


@pytest.fixture
def material(settings: Settings) -> KeyMaterial:
    return load_key_material(settings)


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


def rows(session: Session) -> list[Notification]:
    """The outbox as it is now (ends the test session's snapshot, so later reads are fresh)."""
    session.commit()
    session.expire_all()
    found = list(session.scalars(select(Notification).order_by(Notification.id)))
    session.commit()
    return found


def test_every_required_template_exists_in_both_languages() -> None:
    for name in REQUIRED:
        texts = notify.TEMPLATES[(notify.BORROWER, name)]
        assert set(texts) == {"zh-CN", "en"}
        params = dict.fromkeys(notify.placeholders(notify.BORROWER, name), "X")
        rendered = notify.render(notify.BORROWER, name, params)
        assert len(rendered.splitlines()) == 2


def test_a_missing_param_is_a_programming_error() -> None:
    with pytest.raises(KeyError, match="code"):
        notify.render(notify.BORROWER, "signin_code", {})


def test_a_borrower_message_goes_to_the_reported_phone_and_is_sealed(
    session: Session, material: KeyMaterial, bank: Member, engine_name: str
) -> None:
    seed(session, material, bank, phone="+8613911112222")
    who = index_of(material, national_id(1))
    notify.to_borrower(
        session,
        material,
        borrower_index=who,
        template="signin_code",
        params={"code": "482913"},
        now=NOW,
    )
    session.commit()
    [row] = rows(session)
    assert row.state == notify.PENDING and row.audience == "borrower"
    assert row.message is None and row.message_ct is not None
    assert b"482913" not in row.message_ct and b"13911112222" not in row.message_ct
    [message] = notify.outbox(session, material, NOW)
    assert message.to == "+8613911112222"
    assert "482913" in message.text and message.template == "signin_code"


def test_the_newest_record_gives_the_phone(
    session: Session, material: KeyMaterial, bank: Member
) -> None:
    seed(session, material, bank, phone="+8613900000001", now=NOW - dt.timedelta(hours=12))
    other = admit(session, "BANKB")
    seed(session, material, other, phone="+8613900000002", account_ref="LOAN-77")
    notify.to_borrower(
        session,
        material,
        borrower_index=index_of(material, national_id(1)),
        template="record_cleared",
        params={"institution": "BANKA"},
        now=NOW,
    )
    [message] = notify.outbox(session, material, NOW)
    assert message.to == "+8613900000002"


def test_without_a_phone_the_message_is_recorded_as_having_no_destination(
    session: Session, material: KeyMaterial
) -> None:
    notify.to_borrower(
        session,
        material,
        borrower_index=index_of(material, national_id(9)),
        template="signin_code",
        params={"code": "000111"},
        now=NOW,
    )
    session.commit()
    [row] = rows(session)
    assert row.state == notify.NO_DESTINATION and row.message_ct is not None
    [message] = notify.outbox(session, material, NOW)
    assert message.to is None


def test_a_member_message_is_plain_references(session: Session, bank: Member) -> None:
    institution = session.scalar(select(Institution).where(Institution.code == "BANKA"))
    assert institution is not None
    notify.to_member(
        session,
        institution_id=institution.id,
        template="dispute_filed",
        params={"record": "r1", "dispute": "d1", "due": "2026-12-13"},
        now=NOW,
    )
    session.commit()
    [row] = rows(session)
    assert row.institution_id == institution.id and row.data_key_id is None
    assert json.loads(row.message or "")["to"] == "BANKA"


class Gateway:
    """A local SMS gateway that records what it is sent and answers ``status``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                gateway.received.append(json.loads(self.rfile.read(length)))
                self.send_response(gateway.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/sms"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    g = Gateway()
    yield g
    g.close()


def _queue_code(
    session: Session, material: KeyMaterial, bank: Member, now: dt.datetime = NOW
) -> None:
    seed(session, material, bank, phone="+8613911112222")
    notify.to_borrower(
        session,
        material,
        borrower_index=index_of(material, national_id(1)),
        template="signin_code",
        params={"code": "271828"},
        now=now,
    )
    session.commit()


def test_the_webhook_sends_once_then_destroys_the_content(
    session: Session, material: KeyMaterial, bank: Member, engine: Engine, gateway: Gateway
) -> None:
    _queue_code(session, material, bank)
    key_id = rows(session)[0].data_key_id
    sessions = sessionmaker(bind=engine)
    sender = notify.WebhookNotifier(gateway.url, timeout=5)
    report = notify.deliver_pending(sessions, material, sender, NOW)
    assert report.sent == 1
    [sent] = gateway.received
    assert sent["to"] == "+8613911112222" and "271828" in sent["text"]
    [row] = rows(session)
    assert row.state == notify.SENT and row.message_ct is None and row.data_key_id is None
    assert session.get(DataKey, key_id) is None
    assert notify.deliver_pending(sessions, material, sender, NOW).sent == 0
    assert len(gateway.received) == 1
    # After the retention even the empty row goes.
    later = NOW + notify.RETENTION + dt.timedelta(seconds=1)
    assert notify.deliver_pending(sessions, material, sender, later).purged == 1
    assert rows(session) == []


def test_a_failing_gateway_is_retried_then_given_up(
    session: Session, material: KeyMaterial, bank: Member, engine: Engine, gateway: Gateway
) -> None:
    _queue_code(session, material, bank)
    gateway.status = 503
    sessions = sessionmaker(bind=engine)
    sender = notify.WebhookNotifier(gateway.url, timeout=5)
    when = NOW
    for attempt in range(1, notify.MAX_ATTEMPTS + 1):
        report = notify.deliver_pending(sessions, material, sender, when)
        assert len(gateway.received) == attempt
        [row] = rows(session)
        if attempt < notify.MAX_ATTEMPTS:
            assert report.retried == 1 and row.state == notify.PENDING
            # Not due again before its backoff.
            assert notify.deliver_pending(sessions, material, sender, when).retried == 0
            when = row.next_attempt_at
        else:
            assert report.failed == 1 and row.state == notify.FAILED
            assert row.message_ct is None


def test_an_unreachable_gateway_counts_as_a_failed_attempt(
    session: Session, material: KeyMaterial, bank: Member, engine: Engine
) -> None:
    _queue_code(session, material, bank)
    sender = notify.WebhookNotifier("http://127.0.0.1:9/sms", timeout=2)
    report = notify.deliver_pending(sessionmaker(bind=engine), material, sender, NOW)
    assert report.retried == 1 and rows(session)[0].attempts == 1


def test_expired_messages_are_purged_with_their_keys(
    session: Session, material: KeyMaterial, bank: Member
) -> None:
    _queue_code(session, material, bank)
    key_id = rows(session)[0].data_key_id
    assert notify.purge(session, NOW + dt.timedelta(minutes=9)) == 0
    assert notify.outbox(session, material, NOW + dt.timedelta(minutes=11)) == []
    assert notify.purge(session, NOW + dt.timedelta(minutes=11)) == 1
    session.commit()
    assert rows(session) == [] and session.get(DataKey, key_id) is None


def test_the_outbox_backend_never_sends(
    session: Session, material: KeyMaterial, bank: Member, engine: Engine
) -> None:
    _queue_code(session, material, bank)
    report = notify.deliver_pending(
        sessionmaker(bind=engine), material, notify.OutboxNotifier(), NOW
    )
    assert report.sent == 0 and rows(session)[0].state == notify.PENDING


def test_make_notifier_checks_its_settings(tmp_path: Path) -> None:
    assert isinstance(notify.make_notifier(Settings(instance_path=tmp_path)), notify.OutboxNotifier)
    hook = Settings(instance_path=tmp_path, notifier="webhook", sms_gateway_url="https://sms.test/")
    assert isinstance(notify.make_notifier(hook), notify.WebhookNotifier)
    with pytest.raises(SetupError):
        notify.make_notifier(Settings(instance_path=tmp_path, notifier="webhook"))
    with pytest.raises(SetupError):
        notify.make_notifier(Settings(instance_path=tmp_path, notifier="pigeon"))


def test_the_cli_shows_the_outbox_decrypted(
    session: Session, material: KeyMaterial, bank: Member, settings: Settings, database_url: str
) -> None:
    _queue_code(session, material, bank, dt.datetime.now(dt.UTC))
    env = {"REGISTRY_INSTANCE": str(settings.instance_path), "REGISTRY_DATABASE_URL": database_url}
    result = CliRunner().invoke(cli, ["notifications", "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [line] = result.output.splitlines()
    shown = json.loads(line)
    assert shown["to"] == "+8613911112222" and "271828" in shown["text"]
    plain = CliRunner().invoke(cli, ["notifications"], env=env, catch_exceptions=False)
    assert "signin_code -> +8613911112222" in plain.output


def test_the_worker_sends_due_messages_through_the_webhook(
    session: Session,
    material: KeyMaterial,
    bank: Member,
    settings: Settings,
    database_url: str,
    gateway: Gateway,
) -> None:
    _queue_code(session, material, bank, dt.datetime.now(dt.UTC))
    env = {
        "REGISTRY_INSTANCE": str(settings.instance_path),
        "REGISTRY_DATABASE_URL": database_url,
        "REGISTRY_NOTIFIER": "webhook",
        "REGISTRY_SMS_GATEWAY_URL": gateway.url,
    }
    result = CliRunner().invoke(cli, ["worker", "--once"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "notifications purged=0" in result.output
    assert "notifications: DeliveryReport(sent=1" in result.output
    [sent] = gateway.received
    assert sent["to"] == "+8613911112222" and sent["template"] == "signin_code"
