"""docs/protocol.md cannot drift: every worked-example value is recomputed here and must appear.

The values are recomputed with the client and crypto code directly (not by importing
docs/worked_example.py), then the script's own output is compared with the document too.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from client.keys import key_id, private_key_from_seed
from client.receipts import RECEIPT_PAYLOAD_TYPE, verify_receipt
from client.reports import REPORT_PAYLOAD_TYPE, serialize_payload, sign_payload_bytes
from crypto import dsse, ed25519, httpsig
from registry import national_id
from registry.payload import parse_report
from registry.policy import DEFAULT_POLICY

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "protocol.md"
MEMBER_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
REGISTRY_SEED = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
URL = "http://127.0.0.1:8000/v1/reports"
CREATED = 1767225600
NONCE = "worked-example-nonce-0001"


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("worked_example", ROOT / "docs/worked_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def payload_document() -> dict[str, Any]:
    """The example payload as the document shows it (parsed back from its exact bytes)."""
    text = DOC_PATH.read_text(encoding="utf-8")
    match = re.search(r'```json\n(\{"version":1,"report_id".*)\n```', text)
    assert match, "the worked example's payload block is missing"
    document: dict[str, Any] = json.loads(match.group(1))
    return document


def test_the_example_payload_is_valid_under_the_registry_rules(
    payload_document: dict[str, Any],
) -> None:
    assert national_id.validate(payload_document["borrower"]["national_id"])
    report = parse_report(
        payload_document, policy=DEFAULT_POLICY, today=dt.date.fromisoformat("2025-12-01")
    ).state
    assert report is not None
    assert report.days_past_due == (report.as_of_date - report.first_delinquency_date).days + 1
    assert report.penalty <= DEFAULT_POLICY.penalty_limit(report.overdue_principal)
    assert report.overdue_interest <= DEFAULT_POLICY.interest_limit(
        report.overdue_principal, report.days_past_due
    )


def test_every_worked_example_value_appears_verbatim(
    doc: str, payload_document: dict[str, Any]
) -> None:
    member = private_key_from_seed(bytes.fromhex(MEMBER_SEED))
    raw = ed25519.public_key_raw(member)
    keyid = key_id(member)
    payload = serialize_payload(payload_document)
    pae = dsse.pae(REPORT_PAYLOAD_TYPE, payload)
    envelope = sign_payload_bytes(payload, member, keyid)
    headers = httpsig.sign_request(
        method="POST",
        url=URL,
        headers={"Content-Type": "application/json"},
        body=envelope,
        key=member,
        keyid=keyid,
        created=CREATED,
        nonce=NONCE,
    )
    base = httpsig.signature_base(
        httpsig.REQUIRED_COMPONENTS,
        httpsig.SignatureParams(created=CREATED, keyid=keyid, nonce=NONCE),
        method="POST",
        target_uri=URL,
        authority="127.0.0.1:8000",
        path="/v1/reports",
        query="",
        headers={"content-digest": headers["Content-Digest"]},
    )
    signature = base64.b64decode(headers["Signature"].removeprefix("sig1=:").removesuffix(":"))
    assert ed25519.verify(raw, signature, base)

    expected = {
        "member public key": raw.hex(),
        "member public PEM": ed25519.public_key_to_pem(raw).decode(),
        "key id": f"key id:                 {keyid}",
        "payload bytes": payload.decode(),
        "payload length": f"{len(payload)} bytes of UTF-8",
        "payload sha256": hashlib.sha256(payload).hexdigest(),
        "PAE": pae.decode(),
        "PAE sha256": hashlib.sha256(pae).hexdigest(),
        "envelope signature": base64.b64encode(ed25519.sign(member, pae)).decode(),
        "envelope": envelope.decode(),
        "envelope sha256": hashlib.sha256(envelope).hexdigest(),
        "request line": "POST /v1/reports HTTP/1.1\nHost: 127.0.0.1:8000",
        "content length": f"Content-Length: {len(envelope)}",
        "Content-Digest": f"Content-Digest: {headers['Content-Digest']}",
        "Signature-Input": f"Signature-Input: {headers['Signature-Input']}",
        "Signature": f"Signature: {headers['Signature']}",
        "signature base": f"```text\n{base.decode()}\n```",
        "GET digest": f"Content-Digest: {httpsig.content_digest(b'')}",
    }
    missing = [name for name, value in expected.items() if value not in doc]
    assert not missing, f"docs/protocol.md is out of date for: {missing}"
    assert keyid == "21fe31dfa154a261626bf854046fd227"  # what `openssl ... | sha256sum` shows


def test_the_example_receipt_verifies_against_the_example_envelope(doc: str) -> None:
    registry = private_key_from_seed(bytes.fromhex(REGISTRY_SEED))
    registry_raw = ed25519.public_key_raw(registry)
    assert base64.b64encode(registry_raw).decode() in doc
    assert key_id(registry) in doc
    envelope = re.search(r'```json\n(\{"payload":"[^\n]*report\+json[^\n]*)\n```', doc)
    receipt = re.search(r'```json\n(\{"payload":"[^\n]*receipt\+json[^\n]*)\n```', doc)
    assert envelope and receipt
    payload = verify_receipt(
        receipt.group(1).encode(),
        {key_id(registry): registry_raw},
        envelope=envelope.group(1).encode(),
    )
    assert payload["report_id"] == "BANKA-20251201-000001"
    assert json.dumps(payload, sort_keys=True, separators=(",", ":")) in doc
    assert RECEIPT_PAYLOAD_TYPE in doc


def test_the_pae_illustration_is_right(doc: str) -> None:
    pae = dsse.pae("t", b'{"a":1}')
    assert f"`{pae.decode()}`" in doc
    assert f"the {len(pae)} bytes" in doc


def test_the_generator_script_reproduces_the_section(doc: str, script: ModuleType) -> None:
    section = script.render(script.compute())
    assert section in doc, "run: python docs/worked_example.py --write"


def _codes(path: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern, path.read_text(encoding="utf-8")))


def test_every_payload_rule_code_is_documented(doc: str) -> None:
    payload_py = ROOT / "registry" / "payload.py"
    codes = _codes(ROOT / "registry" / "fields.py", r'Invalid\(\s*"([a-z0-9_]+)"')
    codes |= _codes(payload_py, r'Invalid\(\s*"([a-z0-9_]+)"')
    codes |= _codes(payload_py, r'c\.add\(\s*"[a-z_.]+",\s*"([a-z0-9_]+)"')
    codes |= _codes(ROOT / "registry" / "national_id.py", r'InvalidNationalId\(\s*"([a-z0-9_]+)"')
    for path in (ROOT / "registry").glob("*.py"):
        codes |= _codes(path, r'FieldError\(\s*"[a-zA-Z_.]+",\s*"([a-z0-9_]+)"')
    codes |= {"required", "unknown_field", "penalty_cap", "interest_cap"}
    undocumented = sorted(c for c in codes if f"`{c}`" not in doc)
    assert not undocumented, f"rule codes missing from docs/protocol.md: {undocumented}"


def test_every_error_code_is_documented(doc: str) -> None:
    codes: set[str] = set()
    for path in (ROOT / "registry").glob("*.py"):
        codes |= _codes(path, r'code="([a-z_]+)"')
    codes -= {"penalty_cap", "interest_cap"}  # rule codes of the policy, documented as rules
    undocumented = sorted(c for c in codes if f"`{c}`" not in doc)
    assert not undocumented, f"error codes missing from docs/protocol.md: {undocumented}"
