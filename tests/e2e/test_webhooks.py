"""Webhooks against a real HTTPS receiver: TLS with a CA made here, signatures, retries, restarts.

The receiver is a threaded ``http.server`` behind TLS with a certificate for ``localhost`` issued
by a throw-away CA that only the registry's ``webhook_ca_file`` trusts. It records every request
and answers from a script (status codes in turn), optionally holding a request open.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from client.receipts import RegistryKey, parse_registry_keys
from client.webhooks import WebhookInvalid, verify_alert
from conftest import Clock
from crypto import ed25519, httpsig
from factories import Member, admit, national_id, payload, signed, submit
from registry.db import make_session_factory
from registry.models import AlertDelivery
from registry.policy import Policy
from registry.secrets import load_key_material
from registry.settings import Settings
from registry.webhooks import Deliverer, DeliveryReport

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


# --- a CA, a server certificate, a receiver ------------------------------------------------


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Tls(
        ca=_pem(folder / "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        cert=_pem(folder / "server.pem", cert.public_bytes(serialization.Encoding.PEM)),
        key=_pem(
            folder / "server.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
    )


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event_id(self) -> str:
        value: str = json.loads(self.body)["event_id"]
        return value


@dataclass
class Receiver:
    """A member's webhook endpoint: records requests, answers ``script`` then 200."""

    port: int = 0
    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    hold_request: int | None = None  # 1-based number of a request to hold open
    trickle: bool = False  # answer one header line at a time, slowly, until released
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/hooks/alerts?tenant=b"

    def event_ids(self) -> list[str]:
        with self.lock:
            return [r.event_id for r in self.received]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                receiver.received.append(
                    Received("POST", self.path, dict(self.headers.items()), body)
                )
                number = len(receiver.received)
                status = receiver.script.pop(0) if receiver.script else 200
            if number == receiver.hold_request:
                receiver.holding.set()
                receiver.release.wait(30)
            if receiver.trickle:
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                while not receiver.release.wait(0.2):
                    self.wfile.write(b"X-Slow: 1\r\n")
                    self.wfile.flush()
                return
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", f"https://localhost:{receiver.port}/elsewhere")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (the killed worker) is expected here


@pytest.fixture
def receiver(tls: Tls) -> Iterator[Receiver]:
    box = Receiver()
    server = _Server(("127.0.0.1", 0), _handler(box))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    box.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box
    box.release.set()
    server.shutdown()
    server.server_close()
    thread.join(10)


# --- the registry side ---------------------------------------------------------------------


@pytest.fixture
def hook_settings(settings: Settings, tls: Tls) -> Settings:
    return settings.with_overrides(
        webhook_ca_file=tls.ca, webhook_allow_private_networks=True, webhook_timeout_seconds=2.0
    )


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture
def watcher(session: Session) -> Member:
    return admit(session, "BANKB")


def deliverer(
    settings: Settings, clock: Clock, policy: Policy | None = None, **kw: Any
) -> Deliverer:
    chosen = policy or Policy()
    return Deliverer(load_key_material(settings), settings, chosen, clock=clock, **kw)


def call(
    client: FlaskClient,
    member: Member,
    method: str,
    path: str,
    body: Any = None,
    *,
    clock: Clock | None = None,
) -> Any:
    raw = b"" if body is None else json.dumps(body).encode()
    created = int(clock().timestamp()) if clock else None
    response = signed(client, member, method, path, raw, created=created)
    assert response.status_code < 300, response.get_data(as_text=True)
    return response.get_json(silent=True)


def open_record(client: FlaskClient, member: Member, serial: int) -> None:
    doc = payload(member, account_ref=f"A-{secrets.token_hex(6)}")
    doc["borrower"] = {**doc["borrower"], "national_id": national_id(serial)}
    response = submit(client, member, doc)
    assert response.status_code == 201, response.get_data(as_text=True)


def watch(client: FlaskClient, member: Member, serial: int, url: str | None) -> None:
    open_record(client, member, serial)  # the relationship: the member's own record
    call(client, member, "POST", "/v1/subscriptions", {"national_id": national_id(serial)})
    if url is not None:
        call(client, member, "PUT", "/v1/webhook", {"url": url})


def registry_keys(client: FlaskClient) -> list[RegistryKey]:
    return parse_registry_keys(client.get("/v1/registry-keys").get_json())


def deliveries(session: Session) -> list[AlertDelivery]:
    session.expire_all()
    rows = list(session.scalars(select(AlertDelivery).order_by(AlertDelivery.id)))
    session.commit()
    return rows


# --- delivery and verification -------------------------------------------------------------


def test_an_alert_is_pushed_signed_and_verifiable_with_the_published_key(
    client: FlaskClient,
    bank: Member,
    watcher: Member,
    receiver: Receiver,
    hook_settings: Settings,
    sessions: sessionmaker[Session],
    clock: Clock,
) -> None:
    watch(client, watcher, 60, receiver.url)
    open_record(client, bank, 60)

    done = deliverer(hook_settings, clock).drain(sessions)
    assert (done.delivered, done.retrying) == (1, 0)
    [got] = receiver.received
    assert got.path == "/hooks/alerts?tenant=b"
    assert got.headers["Content-Type"] == "application/json"
    document = verify_alert(
        method="POST",
        url=receiver.url,
        headers=got.headers,
        body=got.body,
        registry_keys=registry_keys(client),
        now=int(clock().timestamp()),
    )
    [pulled] = call(client, watcher, "GET", "/v1/alerts")["alerts"]
    assert pulled.pop("delivery")["state"] == "delivered"
    assert document == pulled
    assert document["type"] == "new_delinquency_elsewhere"
    assert document["record"]["institution"] == "BANKA"

    keys = registry_keys(client)
    tampered = got.body.replace(b"BANKA", b"BANKC")
    with pytest.raises(WebhookInvalid) as bad:
        verify_alert(
            method="POST",
            url=receiver.url,
            headers=got.headers,
            body=tampered,
            registry_keys=keys,
            now=int(clock().timestamp()),
        )
    assert bad.value.reason == "digest_mismatch"
    with pytest.raises(WebhookInvalid) as elsewhere:
        verify_alert(
            method="POST",
            url=receiver.url.replace("tenant=b", "tenant=c"),
            headers=got.headers,
            body=got.body,
            registry_keys=keys,
            now=int(clock().timestamp()),
        )
    assert elsewhere.value.reason == "signature_invalid"
    impostor = ed25519.generate_private_key()
    forged = httpsig.sign_request(
        method="POST",
        url=receiver.url,
        headers={},
        body=got.body,
        key=impostor,
        keyid=keys[0].keyid,
        created=int(clock().timestamp()),
        nonce=secrets.token_urlsafe(24),
    )
    with pytest.raises(WebhookInvalid) as forgery:
        verify_alert(
            method="POST",
            url=receiver.url,
            headers=forged,
            body=got.body,
            registry_keys=keys,
            now=int(clock().timestamp()),
        )
    assert forgery.value.reason == "signature_invalid"


def test_a_failing_receiver_is_retried_with_exponential_back_off(
    client: FlaskClient,
    bank: Member,
    watcher: Member,
    receiver: Receiver,
    hook_settings: Settings,
    sessions: sessionmaker[Session],
    session: Session,
    clock: Clock,
) -> None:
    watch(client, watcher, 61, receiver.url)
    open_record(client, bank, 61)
    receiver.script = [500, 503]
    policy = Policy(webhook_backoff_base_seconds=60, webhook_max_attempts=5)
    worker = deliverer(hook_settings, clock, policy, jitter=lambda: 0.0)

    assert worker.drain(sessions).retrying == 1
    [row] = deliveries(session)
    assert (row.attempts, row.last_status, row.last_error) == (1, 500, "http_500")
    first_wait = (row.next_attempt_at - clock()).total_seconds()
    assert 25 <= first_wait <= 30  # 60 s x 2^0, "equal jitter" at its low end: 30 s
    assert worker.drain(sessions).attempted == 0  # not due yet
    clock.advance(seconds=31)
    assert worker.drain(sessions).retrying == 1
    [row] = deliveries(session)
    assert row.attempts == 2 and row.last_error == "http_503"
    assert 55 <= (row.next_attempt_at - clock()).total_seconds() <= 60  # doubled
    clock.advance(seconds=61)
    assert worker.drain(sessions).delivered == 1
    [row] = deliveries(session)
    assert (row.state, row.attempts, row.last_status, row.last_error) == ("delivered", 3, 200, None)

    assert len(set(receiver.event_ids())) == 1 and len(receiver.received) == 3
    keys = registry_keys(client)
    signatures = set()
    for got in receiver.received:
        assert got.body == receiver.received[0].body  # same bytes every time
        created = int(re.findall(r";created=(\d+)", got.headers["Signature-Input"])[0])
        verify_alert(
            method="POST",
            url=receiver.url,
            headers=got.headers,
            body=got.body,
            registry_keys=keys,
            now=created,
        )
        signatures.add(got.headers["Signature"])
    assert len(signatures) == 3  # a fresh signature (created, nonce) per attempt


def test_after_the_policy_attempts_the_delivery_is_dead_and_the_member_sees_it(
    client: FlaskClient,
    bank: Member,
    watcher: Member,
    receiver: Receiver,
    hook_settings: Settings,
    sessions: sessionmaker[Session],
    clock: Clock,
) -> None:
    watch(client, watcher, 62, receiver.url)
    open_record(client, bank, 62)
    receiver.script = [500] * 10
    policy = Policy(webhook_backoff_base_seconds=10, webhook_max_attempts=3)
    worker = deliverer(hook_settings, clock, policy)
    total = DeliveryReport()
    for _ in range(6):
        total.add(worker.drain(sessions))
        clock.advance(seconds=60)
    assert (total.retrying, total.dead, total.delivered) == (2, 1, 0)
    assert len(receiver.received) == 3
    [dead] = call(client, watcher, "GET", "/v1/alerts?delivery=dead", clock=clock)["alerts"]
    assert dead["delivery"]["attempts"] == 3
    assert dead["delivery"]["last_error"] == "http_500" and dead["delivery"]["dead_at"]

    receiver.script = []
    call(client, watcher, "POST", f"/v1/alerts/{dead['event_id']}/redeliver", clock=clock)
    assert worker.drain(sessions).delivered == 1
    assert receiver.event_ids()[-1] == dead["event_id"]


def test_redirects_are_not_followed(
    client: FlaskClient,
    bank: Member,
    watcher: Member,
    receiver: Receiver,
    hook_settings: Settings,
    sessions: sessionmaker[Session],
    session: Session,
    clock: Clock,
) -> None:
    watch(client, watcher, 63, receiver.url)
    open_record(client, bank, 63)
    receiver.script = [302]
    assert deliverer(hook_settings, clock).drain(sessions).retrying == 1
    assert [r.path for r in receiver.received] == ["/hooks/alerts?tenant=b"]
    [row] = deliveries(session)
    assert (row.last_status, row.last_error) == (302, "redirect_not_followed")


def test_untrusted_certificates_private_addresses_and_slow_receivers_fail_safely(
    client: FlaskClient,
    bank: Member,
    watcher: Member,
    receiver: Receiver,
    hook_settings: Settings,
    settings: Settings,
    sessions: sessionmaker[Session],
    session: Session,
    clock: Clock,
) -> None:
    watch(client, watcher, 64, receiver.url)
    open_record(client, bank, 64)
    no_ca = hook_settings.with_overrides(webhook_ca_file=None)
    public_only = hook_settings.with_overrides(webhook_allow_private_networks=False)
    outcomes = []
    for chosen in (no_ca, public_only):
        deliverer(chosen, clock).drain(sessions)
        [row] = deliveries(session)
        outcomes.append(row.last_error)
        clock.advance(seconds=3600)
    assert outcomes == ["tls_error", "address_not_allowed"]
    assert receiver.received == []  # a refused address is never connected to

    receiver.hold_request = 1
    slow = hook_settings.with_overrides(webhook_timeout_seconds=0.5)
    assert deliverer(slow, clock).drain(sessions).retrying == 1
    receiver.release.set()
    [row] = deliveries(session)
    assert row.last_error == "timeout" and row.state == "pending"


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_deadline(
    client: FlaskClient,
    bank: Member,
    watcher: Member,
    receiver: Receiver,
    hook_settings: Settings,
    sessions: sessionmaker[Session],
    session: Session,
    clock: Clock,
) -> None:
    """Each read gets the timeout; the whole exchange at most three times it."""
    watch(client, watcher, 68, receiver.url)
    open_record(client, bank, 68)
    receiver.trickle = True
    slow = hook_settings.with_overrides(webhook_timeout_seconds=0.5)
    started = time.monotonic()
    try:
        assert deliverer(slow, clock).drain(sessions).retrying == 1
    finally:
        receiver.release.set()
    assert time.monotonic() - started < 5
    [row] = deliveries(session)
    assert (row.last_error, row.last_status) == ("timeout", None)


def test_no_alert_reaches_a_member_without_a_relationship(
    client: FlaskClient,
    bank: Member,
    watcher: Member,
    receiver: Receiver,
    hook_settings: Settings,
    sessions: sessionmaker[Session],
    clock: Clock,
) -> None:
    call(client, watcher, "PUT", "/v1/webhook", {"url": receiver.url})
    refused = signed(
        client,
        watcher,
        "POST",
        "/v1/subscriptions",
        json.dumps({"national_id": national_id(65)}).encode(),
    )
    assert refused.status_code == 403 and refused.get_json()["code"] == "no_relationship"
    watch(client, watcher, 66, None)  # related to another borrower only
    open_record(client, bank, 65)
    assert deliverer(hook_settings, clock).drain(sessions).attempted == 0
    assert receiver.received == []
    assert call(client, watcher, "GET", "/v1/alerts")["alerts"] == []


# --- at least once across a worker restart -------------------------------------------------


def _worker(env: dict[str, str], log: BinaryIO) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "registry"), "alerts", "deliver", "--batch", "1", "--poll", "0.2"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_delivery_is_at_least_once_across_a_killed_worker_with_duplicate_safe_event_ids(
    client: FlaskClient,
    bank: Member,
    watcher: Member,
    receiver: Receiver,
    settings: Settings,
    database_url: str,
    tls: Tls,
    session: Session,
    tmp_path: Path,
) -> None:
    watch(client, watcher, 67, receiver.url)
    for _ in range(4):
        open_record(client, bank, 67)
    expected = {a["event_id"] for a in call(client, watcher, "GET", "/v1/alerts")["alerts"]}
    assert len(expected) == 4
    env = {
        **os.environ,
        "REGISTRY_INSTANCE": str(settings.instance_path),
        "REGISTRY_DATABASE_URL": database_url,
        "REGISTRY_WEBHOOK_CA_FILE": str(tls.ca),
        "REGISTRY_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1",
        "REGISTRY_WEBHOOK_TIMEOUT_SECONDS": "1",
    }
    log = tmp_path / "worker.log"
    receiver.hold_request = 2  # the worker dies while the receiver holds this one

    with log.open("ab") as out:
        first = _worker(env, out)
        try:
            _wait(receiver.holding.is_set, 60, "the second delivery to arrive")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        receiver.release.set()
        in_flight = receiver.event_ids()[1]
        states = [d.state for d in deliveries(session)]
        assert states.count("delivered") == 1 and states.count("pending") == 3

        second = _worker(env, out)
        try:
            _wait(
                lambda: all(d.state == "delivered" for d in deliveries(session)),
                60,
                "every delivery to complete after the restart",
            )
        finally:
            second.terminate()
            second.wait(30)

    received = receiver.event_ids()
    assert set(received) == expected, log.read_text()
    assert received.count(in_flight) >= 2  # sent again: the worker died before recording it
    by_event: dict[str, bytes] = {}
    keys = registry_keys(client)
    for got in receiver.received:
        verify_alert(
            method="POST", url=receiver.url, headers=got.headers, body=got.body, registry_keys=keys
        )
        assert by_event.setdefault(got.event_id, got.body) == got.body  # duplicates are equal
    assert len(by_event) == 4
