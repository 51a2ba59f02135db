"""Signing reports: the envelope verifies, and a file is signed byte for byte as given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_client_fakes import report_document

from client.errors import ReportError
from client.keys import key_id
from client.reports import (
    REPORT_PAYLOAD_TYPE,
    payload_of,
    serialize_payload,
    sign_file,
    sign_payload,
    sign_payload_bytes,
)
from crypto import dsse, ed25519
from crypto.errors import SignatureInvalid
from registry.payload import PAYLOAD_TYPE


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return ed25519.generate_private_key()


def verify(envelope: bytes, key: Ed25519PrivateKey) -> dsse.Envelope:
    parsed = dsse.parse_envelope(envelope)
    raw = ed25519.public_key_raw(key)
    assert dsse.verify_envelope(parsed, {key_id(key): raw}) == key_id(key)
    return parsed


def test_the_payload_type_is_the_registrys() -> None:
    assert REPORT_PAYLOAD_TYPE == PAYLOAD_TYPE


def test_a_signed_dict_verifies_and_carries_the_serialised_bytes(key: Ed25519PrivateKey) -> None:
    doc = report_document()
    parsed = verify(sign_payload(doc, key, key_id(key)), key)
    assert parsed.payload_type == REPORT_PAYLOAD_TYPE
    assert parsed.payload == serialize_payload(doc)
    assert [s.keyid for s in parsed.signatures] == [key_id(key)]


def test_serialisation_is_compact_utf8_in_the_given_order() -> None:
    raw = serialize_payload({"b": 1, "a": {"name": "张三"}})
    assert raw == '{"b":1,"a":{"name":"张三"}}'.encode()


def test_a_file_is_signed_byte_for_byte(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    doc = report_document()
    # Pretty-printed, keys reordered, non-ASCII, CRLF and a trailing newline: all kept.
    text = json.dumps(dict(reversed(doc.items())), indent=3, ensure_ascii=False)
    exact = text.replace("\n", "\r\n").encode() + b"\r\n"
    path = tmp_path / "report.json"
    path.write_bytes(exact)

    parsed = verify(sign_file(path, key, key_id(key)), key)

    assert parsed.payload == exact
    assert parsed.payload != serialize_payload(doc)


def test_a_tampered_payload_does_not_verify(key: Ed25519PrivateKey) -> None:
    parsed = dsse.parse_envelope(sign_payload(report_document(), key, key_id(key)))
    tampered = dsse.Envelope(
        parsed.payload_type, parsed.payload.replace(b"150.00", b"950.00"), parsed.signatures
    )
    with pytest.raises(SignatureInvalid):
        dsse.verify_envelope(tampered, {key_id(key): ed25519.public_key_raw(key)})


def test_floats_are_refused_before_signing(key: Ed25519PrivateKey) -> None:
    with pytest.raises(ReportError, match="penalty is a float"):
        sign_payload(report_document(penalty=100.0), key, key_id(key))
    with pytest.raises(ReportError, match=r"contact.channels\[0\] is a float"):
        serialize_payload({"contact": {"channels": [1.5]}})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"penalty": 1.5}', "float"),
        (b'{"a": 1, "a": 2}', "more than once"),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"{not json", "not JSON"),
    ],
)
def test_files_the_registry_would_refuse_are_refused_here(
    tmp_path: Path, key: Ed25519PrivateKey, content: bytes, message: str
) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(content)
    with pytest.raises(ReportError, match=message):
        sign_file(path, key, key_id(key))


def test_a_missing_file_raises_a_report_error(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(ReportError, match="cannot read"):
        sign_file(tmp_path / "absent.json", key, key_id(key))


def test_payload_of_reads_back_the_report(key: Ed25519PrivateKey) -> None:
    raw = serialize_payload(report_document())
    assert payload_of(sign_payload_bytes(raw, key, key_id(key)))["report_id"] == "r-client-0001"
    with pytest.raises(ReportError):
        payload_of(b"{}")
