"""Receipt verification: a good receipt passes; each kind of bad one fails with its reason."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_client_fakes import RegistryKeyPair, report_document

from client.errors import KeyFileError, ReceiptInvalid
from client.keys import key_id
from client.receipts import (
    RECEIPT_PAYLOAD_TYPE,
    RegistryKey,
    load_registry_keys,
    parse_registry_keys,
    verify_receipt,
)
from client.reports import sign_payload
from crypto import dsse, ed25519
from registry.receipts import RECEIPT_PAYLOAD_TYPE as REGISTRY_RECEIPT_PAYLOAD_TYPE


@pytest.fixture
def member_key() -> Ed25519PrivateKey:
    return ed25519.generate_private_key()


@pytest.fixture
def registry() -> RegistryKeyPair:
    return RegistryKeyPair()


@pytest.fixture
def envelope(member_key: Ed25519PrivateKey) -> bytes:
    return sign_payload(report_document(), member_key, key_id(member_key))


@pytest.fixture
def trusted(registry: RegistryKeyPair) -> list[RegistryKey]:
    return parse_registry_keys(registry.keys_document())


def reason(exc: pytest.ExceptionInfo[ReceiptInvalid]) -> str:
    return exc.value.reason


def test_the_payload_type_is_the_registrys() -> None:
    assert RECEIPT_PAYLOAD_TYPE == REGISTRY_RECEIPT_PAYLOAD_TYPE


def test_a_good_receipt_verifies_and_returns_its_payload(
    registry: RegistryKeyPair, trusted: list[RegistryKey], envelope: bytes
) -> None:
    payload = verify_receipt(registry.receipt(envelope), trusted, envelope=envelope)
    assert payload["report_id"] == "r-client-0001"
    assert payload["institution"] == "BANKA"
    assert payload["sequence"] == 1 and payload["log_index"] == 7
    assert payload["accepted_at"] == "2026-01-01T00:00:00Z"


def test_a_mapping_of_raw_keys_is_accepted(registry: RegistryKeyPair, envelope: bytes) -> None:
    keys = {registry.keyid: registry.raw}
    assert verify_receipt(registry.receipt(envelope), keys, report_id="r-client-0001")


def test_a_signature_by_another_key_under_the_registry_keyid_fails(
    registry: RegistryKeyPair, trusted: list[RegistryKey], envelope: bytes
) -> None:
    forger = ed25519.generate_private_key()
    genuine = dsse.parse_envelope(registry.receipt(envelope))
    forged = dsse.sign_envelope(RECEIPT_PAYLOAD_TYPE, genuine.payload, forger, registry.keyid)
    with pytest.raises(ReceiptInvalid) as info:
        verify_receipt(forged, trusted, envelope=envelope)
    assert reason(info) == "bad_signature"


def test_a_changed_payload_fails(
    registry: RegistryKeyPair, trusted: list[RegistryKey], envelope: bytes
) -> None:
    document = json.loads(registry.receipt(envelope))
    payload = json.loads(base64.b64decode(document["payload"]))
    payload["log_index"] = 8
    document["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(ReceiptInvalid) as info:
        verify_receipt(json.dumps(document).encode(), trusted)
    assert reason(info) == "bad_signature"


def test_a_wrong_payload_type_fails(
    registry: RegistryKeyPair, trusted: list[RegistryKey], envelope: bytes
) -> None:
    payload = dsse.parse_envelope(registry.receipt(envelope)).payload
    # Signed by the genuine registry key, but as another kind of document.
    other = dsse.sign_envelope("application/json", payload, registry.key, registry.keyid)
    with pytest.raises(ReceiptInvalid) as info:
        verify_receipt(other, trusted)
    assert reason(info) == "payload_type"


def test_a_receipt_for_other_envelope_bytes_fails(
    registry: RegistryKeyPair,
    trusted: list[RegistryKey],
    envelope: bytes,
    member_key: Ed25519PrivateKey,
) -> None:
    other = sign_payload(report_document(penalty="99.00"), member_key, key_id(member_key))
    with pytest.raises(ReceiptInvalid) as info:
        verify_receipt(registry.receipt(envelope), trusted, envelope=other)
    assert reason(info) == "envelope_mismatch"


def test_an_unknown_registry_key_fails(envelope: bytes, trusted: list[RegistryKey]) -> None:
    impostor = RegistryKeyPair()
    with pytest.raises(ReceiptInvalid) as info:
        verify_receipt(impostor.receipt(envelope), trusted, envelope=envelope)
    assert reason(info) == "unknown_key"
    assert impostor.keyid in str(info.value)


def test_a_receipt_for_another_report_id_fails(
    registry: RegistryKeyPair, trusted: list[RegistryKey], envelope: bytes
) -> None:
    receipt = registry.receipt(envelope)
    with pytest.raises(ReceiptInvalid) as info:
        verify_receipt(receipt, trusted, report_id="r-client-0002")
    assert reason(info) == "report_id_mismatch"


def test_the_report_id_is_checked_against_the_submitted_envelope(
    registry: RegistryKeyPair, trusted: list[RegistryKey], envelope: bytes
) -> None:
    # A registry bug (or lie) naming the right digest but another report id is caught.
    receipt = registry.receipt(envelope, report_id="r-someone-else")
    with pytest.raises(ReceiptInvalid) as info:
        verify_receipt(receipt, trusted, envelope=envelope)
    assert reason(info) == "report_id_mismatch"


@pytest.mark.parametrize("raw", [b"", b"{}", b"[]", b'{"payloadType":"x"}'])
def test_malformed_receipts_fail(raw: bytes, trusted: list[RegistryKey]) -> None:
    with pytest.raises(ReceiptInvalid) as info:
        verify_receipt(raw, trusted)
    assert reason(info) == "malformed"


def test_a_receipt_payload_missing_fields_fails(
    registry: RegistryKeyPair, trusted: list[RegistryKey]
) -> None:
    receipt = dsse.sign_envelope(
        RECEIPT_PAYLOAD_TYPE, b'{"version":1}', registry.key, registry.keyid
    )
    with pytest.raises(ReceiptInvalid, match="lacks report_id") as info:
        verify_receipt(receipt, trusted)
    assert reason(info) == "malformed"


def test_registry_keys_load_from_json_and_pem_files(
    tmp_path: Path, registry: RegistryKeyPair
) -> None:
    as_json = tmp_path / "keys.json"
    as_json.write_text(json.dumps(registry.keys_document()))
    as_pem = tmp_path / "registry.pem"
    as_pem.write_bytes(ed25519.public_key_to_pem(registry.raw))
    expected = [RegistryKey(registry.keyid, registry.raw, "receipts")]
    assert load_registry_keys(str(as_json)) == expected
    assert [(k.keyid, k.public_key) for k in load_registry_keys(str(as_pem))] == [
        (registry.keyid, registry.raw)
    ]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda k: k.update(keyid="0" * 32),
        lambda k: k.update(algorithm="rsa"),
        lambda k: k.update(public_key="not base64!"),
        lambda k: k.update(public_key=base64.b64encode(b"short").decode()),
        lambda k: k.update(
            public_key_pem=ed25519.public_key_to_pem(
                ed25519.public_key_raw(ed25519.generate_private_key())
            ).decode()
        ),
    ],
)
def test_inconsistent_registry_keys_are_refused(registry: RegistryKeyPair, mutate: object) -> None:
    document = registry.keys_document()
    mutate(document["keys"][0])  # type: ignore[operator]
    with pytest.raises(KeyFileError):
        parse_registry_keys(document)


def test_a_keys_file_that_is_neither_json_nor_pem_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("hello")
    with pytest.raises(KeyFileError):
        load_registry_keys(str(path))
    with pytest.raises(KeyFileError):
        load_registry_keys(str(tmp_path / "absent.json"))
