"""RegistryClient against a local HTTP server that checks request signatures like the registry."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_client_fakes import (
    Answer,
    FakeRegistry,
    RegistryKeyPair,
    problem,
    report_document,
    running_registry,
)

from client.errors import ClientError, KeyFileError, RegistryError, TransportError
from client.http import RegistryClient
from client.keys import key_id
from client.reports import sign_payload
from crypto import ed25519, httpsig


@pytest.fixture
def member_key() -> Ed25519PrivateKey:
    return ed25519.generate_private_key()


@pytest.fixture
def fake(member_key: Ed25519PrivateKey) -> Iterator[FakeRegistry]:
    with running_registry(member_key) as registry:
        yield registry


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(
    fake: FakeRegistry, key: Ed25519PrivateKey, sleeps: list[float], **kw: object
) -> RegistryClient:
    return RegistryClient(fake.base_url, key, key_id(key), sleep=sleeps.append, **kw)  # type: ignore[arg-type]


@pytest.fixture
def envelope(member_key: Ed25519PrivateKey) -> bytes:
    return sign_payload(report_document(), member_key, key_id(member_key))


def test_submit_sends_the_exact_envelope_signed(
    fake: FakeRegistry, member_key: Ed25519PrivateKey, sleeps: list[float], envelope: bytes
) -> None:
    receipt = fake.registry.receipt(envelope)
    fake.answer(Answer(201, receipt))

    result = make_client(fake, member_key, sleeps).submit(envelope)

    assert (result.status, result.created, result.receipt) == (201, True, receipt)
    [seen] = fake.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/v1/reports", envelope)
    assert seen.keyid == key_id(member_key)
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Content-Digest"] == httpsig.content_digest(envelope)
    assert (
        'sig1=("@method" "@target-uri" "content-digest");created='
        in seen.headers["Signature-Input"]
    )
    assert sleeps == []


def test_a_resubmission_answered_200_is_not_created(
    fake: FakeRegistry, member_key: Ed25519PrivateKey, sleeps: list[float], envelope: bytes
) -> None:
    fake.answer(Answer(200, fake.registry.receipt(envelope)))
    result = make_client(fake, member_key, sleeps).submit(envelope)
    assert (result.status, result.created) == (200, False)


def test_a_problem_answer_is_raised_with_its_details_and_not_retried(
    fake: FakeRegistry, member_key: Ed25519PrivateKey, sleeps: list[float], envelope: bytes
) -> None:
    errors = [{"field": "penalty", "rule": "penalty_cap", "message": "too much"}]
    fake.answer(problem(422, "charging_cap_exceeded", "over the caps", errors=errors))

    with pytest.raises(RegistryError) as info:
        make_client(fake, member_key, sleeps).submit(envelope)

    error = info.value
    assert (error.status, error.code, error.detail) == (
        422,
        "charging_cap_exceeded",
        "over the caps",
    )
    assert error.field_errors == errors
    assert error.problem["type"] == "urn:delinquency-registry:problem:charging_cap_exceeded"
    assert "penalty: penalty_cap - too much" in str(error)
    assert len(fake.seen) == 1 and sleeps == []


def test_a_503_is_retried_with_a_fresh_signature_then_succeeds(
    fake: FakeRegistry, member_key: Ed25519PrivateKey, sleeps: list[float], envelope: bytes
) -> None:
    receipt = fake.registry.receipt(envelope)
    fake.answer(problem(503, "unavailable", "try later"), Answer(201, receipt))

    result = make_client(fake, member_key, sleeps).submit(envelope)

    assert result.receipt == receipt
    first, second = fake.seen
    assert first.body == second.body == envelope
    assert first.nonce != second.nonce  # the registry consumes nonces even on failure
    assert len(sleeps) == 1 and sleeps[0] > 0


def test_retry_after_is_honoured(
    fake: FakeRegistry, member_key: Ed25519PrivateKey, sleeps: list[float], envelope: bytes
) -> None:
    busy = problem(429, "rate_limited", "slow down")
    busy.headers["Retry-After"] = "2"
    fake.answer(busy, Answer(200, fake.registry.receipt(envelope)))
    make_client(fake, member_key, sleeps).submit(envelope)
    assert sleeps == [2.0]


def test_server_errors_give_up_after_the_retries(
    fake: FakeRegistry, member_key: Ed25519PrivateKey, sleeps: list[float], envelope: bytes
) -> None:
    fake.answer(*[problem(500, "internal_error", "bug")] * 3)
    with pytest.raises(RegistryError) as info:
        make_client(fake, member_key, sleeps, retries=2).submit(envelope)
    assert info.value.status == 500
    assert len(fake.seen) == 3 and len(sleeps) == 2


def test_backoff_grows(
    fake: FakeRegistry, member_key: Ed25519PrivateKey, sleeps: list[float], envelope: bytes
) -> None:
    fake.answer(*[problem(503, "unavailable", "down")] * 4)
    with pytest.raises(RegistryError):
        make_client(fake, member_key, sleeps, retries=3, backoff=1.0).submit(envelope)
    assert [round(s) for s in sleeps] != [0, 0, 0]
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0 and 2.0 <= sleeps[2] <= 4.0


def test_a_body_that_is_not_problem_details_still_raises_clearly(
    fake: FakeRegistry, member_key: Ed25519PrivateKey, sleeps: list[float], envelope: bytes
) -> None:
    fake.answer(Answer(502, b"<html>Bad gateway</html>", "text/html"))
    with pytest.raises(RegistryError) as info:
        make_client(fake, member_key, sleeps, retries=0).submit(envelope)
    assert (info.value.status, info.value.code) == (502, "http_502")
    assert "Bad gateway" in info.value.detail


def test_redirects_are_not_followed(
    fake: FakeRegistry, member_key: Ed25519PrivateKey, sleeps: list[float], envelope: bytes
) -> None:
    fake.answer(Answer(307, b"", headers={"Location": "http://elsewhere.invalid/v1/reports"}))
    with pytest.raises(RegistryError) as info:
        make_client(fake, member_key, sleeps).submit(envelope)
    assert info.value.status == 307 and len(fake.seen) == 1


def test_connection_errors_are_retried_then_reported(
    member_key: Ed25519PrivateKey, sleeps: list[float], envelope: bytes
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the client connects
    client = RegistryClient(
        f"http://127.0.0.1:{port}", member_key, key_id(member_key), retries=2, sleep=sleeps.append
    )
    with pytest.raises(TransportError, match="after 3 attempts"):
        client.submit(envelope)
    assert len(sleeps) == 2


def test_an_answer_cut_short_is_a_lost_answer_not_a_receipt(
    member_key: Ed25519PrivateKey, sleeps: list[float], envelope: bytes
) -> None:
    """A registry killed between the status line and the body: the client must retry."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]

        def answer_cut_short() -> None:
            for _ in range(2):
                conn, _ = server.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(
                        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                        b'Content-Length: 400\r\nConnection: close\r\n\r\n{"pay'
                    )

        thread = threading.Thread(target=answer_cut_short)
        thread.start()
        client = RegistryClient(
            f"http://127.0.0.1:{port}",
            member_key,
            key_id(member_key),
            retries=1,
            sleep=sleeps.append,
        )
        with pytest.raises(TransportError, match="after 2 attempts"):
            client.submit(envelope)
        thread.join(timeout=10)
    assert len(sleeps) == 1


def test_receipt_is_a_signed_get_with_the_digest_of_the_empty_body(
    fake: FakeRegistry, member_key: Ed25519PrivateKey, sleeps: list[float], envelope: bytes
) -> None:
    receipt = fake.registry.receipt(envelope)
    fake.answer(Answer(200, receipt))

    assert make_client(fake, member_key, sleeps).receipt("r-client-0001") == receipt

    [seen] = fake.seen
    assert (seen.method, seen.path, seen.body) == ("GET", "/v1/receipts/r-client-0001", b"")
    assert seen.keyid == key_id(member_key)
    assert seen.headers["Content-Digest"] == httpsig.content_digest(b"")


def test_an_unknown_receipt_raises_not_found(
    fake: FakeRegistry, member_key: Ed25519PrivateKey, sleeps: list[float]
) -> None:
    fake.answer(problem(404, "receipt_not_found", "no receipt"))
    with pytest.raises(RegistryError) as info:
        make_client(fake, member_key, sleeps).receipt("r-unknown-0001")
    assert (info.value.status, info.value.code) == (404, "receipt_not_found")


def test_a_key_the_registry_does_not_know_is_refused(
    fake: FakeRegistry, sleeps: list[float], envelope: bytes
) -> None:
    stranger = ed25519.generate_private_key()
    with pytest.raises(RegistryError) as info:
        make_client(fake, stranger, sleeps).submit(envelope)
    assert (info.value.status, info.value.code) == (401, "request_unknown_key")


def test_registry_keys_are_fetched_unsigned_and_checked(
    fake: FakeRegistry, member_key: Ed25519PrivateKey, sleeps: list[float]
) -> None:
    [key] = make_client(fake, member_key, sleeps).registry_keys()
    assert (key.keyid, key.public_key, key.use) == (
        fake.registry.keyid,
        fake.registry.raw,
        "receipts",
    )
    assert "Signature" not in fake.seen[0].headers


def test_registry_keys_whose_id_does_not_match_are_refused(
    member_key: Ed25519PrivateKey, sleeps: list[float]
) -> None:
    class Lying(RegistryKeyPair):
        def keys_document(self) -> dict[str, Any]:
            document = super().keys_document()
            document["keys"][0]["keyid"] = "0" * 32
            return document

    with running_registry(member_key, Lying()) as fake, pytest.raises(KeyFileError):
        make_client(fake, member_key, sleeps).registry_keys()


def test_the_base_url_must_be_http() -> None:
    key = ed25519.generate_private_key()
    with pytest.raises(ClientError):
        RegistryClient("ftp://registry", key, key_id(key))
