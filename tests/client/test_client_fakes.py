"""Test doubles for the client tests: a tiny signed-request-checking registry and real receipts.

The fake registry is a real HTTP server (``http.server`` on 127.0.0.1, port 0) that checks every
member request's RFC 9421 signature with ``crypto.httpsig.verify_request`` exactly like the
registry does, refuses replayed nonces, and answers from a queue of canned responses. Receipts and
published keys come from the registry's own ``registry.receipts`` functions, so the client is
tested against what the registry really produces.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import dsse, ed25519, httpsig
from crypto.errors import RequestSignatureError
from registry import receipts as registry_receipts

SIGNED_PREFIXES = ("/v1/reports", "/v1/receipts/")


@dataclass
class Answer:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    """One request as the fake registry received it, and who it proved to be (if signed)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keyid: str | None
    nonce: str | None


def problem(status: int, code: str, detail: str, **extra: Any) -> Answer:
    body = {
        "type": f"urn:delinquency-registry:problem:{code}",
        "title": "Refused",
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return Answer(status, json.dumps(body).encode(), "application/problem+json")


class RegistryKeyPair:
    """The registry's receipt-signing key, used through the registry's own receipt code."""

    def __init__(self) -> None:
        self.key = ed25519.generate_private_key()
        self.keyid = ed25519.key_id(ed25519.public_key_raw(self.key))
        self._material = SimpleNamespace(signing_key=self.key, signing_keyid=self.keyid)

    @property
    def raw(self) -> bytes:
        return ed25519.public_key_raw(self.key)

    def keys_document(self) -> dict[str, Any]:
        return {"keys": registry_receipts.published_keys(self._material)}  # type: ignore[arg-type]

    def receipt(self, envelope: bytes, **overrides: Any) -> bytes:
        """A receipt for ``envelope`` exactly as the registry signs one."""
        report = json.loads(dsse.parse_envelope(envelope).payload)
        payload = {
            "version": 1,
            "report_id": report["report_id"],
            "institution": report["institution"],
            "envelope_sha256": hashlib.sha256(envelope).hexdigest(),
            "sequence": report["sequence"],
            "log_index": 7,
            "accepted_at": "2026-01-01T00:00:00Z",
        }
        payload.update(overrides)
        return registry_receipts.sign_receipt(self._material, payload)  # type: ignore[arg-type]


class FakeRegistry:
    def __init__(self, member_key: Ed25519PrivateKey, registry: RegistryKeyPair) -> None:
        raw = ed25519.public_key_raw(member_key)
        self.member_keys = {ed25519.key_id(raw): raw}
        self.registry = registry
        self.answers: list[Answer] = []
        self.seen: list[Seen] = []
        self.nonces: set[tuple[str, str]] = set()
        self.base_url = ""

    def answer(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        keyid = nonce = None
        if path == "/v1/registry-keys" and method == "GET":
            self.seen.append(Seen(method, path, headers, body, None, None))
            return Answer(200, json.dumps(self.registry.keys_document()).encode())
        if path.startswith(SIGNED_PREFIXES):
            try:
                verified = httpsig.verify_request(
                    method=method,
                    url=self.base_url + path,
                    headers=headers,
                    body=body,
                    key_lookup=self.member_keys.get,
                    now=int(time.time()),
                )
            except RequestSignatureError as exc:
                self.seen.append(Seen(method, path, headers, body, None, None))
                return problem(401, f"request_{exc.reason}", exc.detail)
            keyid, nonce = verified.keyid, verified.nonce
            if (keyid, nonce) in self.nonces:
                self.seen.append(Seen(method, path, headers, body, keyid, nonce))
                return problem(401, "request_replayed", "replay")
            self.nonces.add((keyid, nonce))
        self.seen.append(Seen(method, path, headers, body, keyid, nonce))
        if self.answers:
            return self.answers.pop(0)
        return problem(404, "not_found", "no canned answer left")


def _handler(fake: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            answer = fake.handle(self.command, self.path, dict(self.headers.items()), body)
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body)

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: test output is for failures."""

    return Handler


@contextmanager
def running_registry(
    member_key: Ed25519PrivateKey, registry: RegistryKeyPair | None = None
) -> Iterator[FakeRegistry]:
    fake = FakeRegistry(member_key, registry or RegistryKeyPair())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def report_document(**overrides: Any) -> dict[str, Any]:
    """A valid version-1 report payload with fixed values."""
    doc: dict[str, Any] = {
        "version": 1,
        "report_id": "r-client-0001",
        "institution": "BANKA",
        "account_ref": "CARD-0001-4321",
        "sequence": 1,
        "kind": "open",
        "borrower": {
            "national_id": "11010519491231002X",
            "name": "张三",
            "phone": "+8613800138000",
        },
        "product": "credit_card",
        "currency": "CNY",
        "overdue_principal": "10000.00",
        "overdue_interest": "150.00",
        "penalty": "100.00",
        "days_past_due": 30,
        "first_delinquency_date": "2025-11-02",
        "as_of_date": "2025-12-01",
        "contact": {"status": "reachable"},
        "collection_stage": "reminder",
    }
    doc.update(overrides)
    return doc
