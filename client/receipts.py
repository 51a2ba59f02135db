"""Verify the registry's receipts: the bank's proof that a given report was accepted.

A receipt is worth keeping only once checked: signed by a registry key the bank trusts, of the
receipt payload type, and naming the digest of the very envelope the bank sent. Each failed check
raises ``ReceiptInvalid`` with a stable ``reason``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.errors import ClientError, KeyFileError, ReceiptInvalid
from client.keys import public_key_from_pem
from crypto import dsse, ed25519, strictjson
from crypto.errors import MalformedEnvelope, SignatureInvalid, StrictJSONError

# Duplicated from registry.receipts.RECEIPT_PAYLOAD_TYPE (the client must not import the
# registry); a test keeps the two equal.
RECEIPT_PAYLOAD_TYPE = "application/vnd.delinquency-registry.receipt+json;version=1"

RECEIPT_FIELDS = (
    "version",
    "report_id",
    "institution",
    "envelope_sha256",
    "sequence",
    "log_index",
    "accepted_at",
)


@dataclass(frozen=True)
class RegistryKey:
    """One registry public key, checked: its key id is recomputed from the key, never trusted."""

    keyid: str
    public_key: bytes
    use: str = "receipts"


def parse_registry_keys(document: Any) -> list[RegistryKey]:
    """Keys from the ``GET /v1/registry-keys`` document, refusing any that do not add up."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeyFileError('registry keys must be a JSON object {"keys": [...]}')
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("algorithm") != "ed25519":
            raise KeyFileError("every registry key must be an object with algorithm ed25519")
        raw = _raw_key(entry)
        keyid = ed25519.key_id(raw)
        if entry.get("keyid") != keyid:
            raise KeyFileError(f"registry key {entry.get('keyid')!r} does not match its key")
        keys.append(RegistryKey(keyid=keyid, public_key=raw, use=str(entry.get("use", ""))))
    return keys


def _raw_key(entry: dict[str, Any]) -> bytes:
    encoded = entry.get("public_key")
    try:
        raw = base64.b64decode(str(encoded), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError("a registry public_key is not base64") from None
    if len(raw) != 32:
        raise KeyFileError("a registry public_key is not 32 bytes (raw Ed25519)")
    pem = entry.get("public_key_pem")
    if pem is not None and public_key_from_pem(str(pem).encode("ascii")) != raw:
        raise KeyFileError("a registry key's public_key and public_key_pem disagree")
    return raw


def load_registry_keys(source: str, *, timeout: float = 30) -> list[RegistryKey]:
    """Keys from a file (the keys JSON, or one PEM public key) or an ``http(s)://`` URL.

    A pinned file obtained out of band is the stronger choice: keys fetched from the registry
    prove only that the registry said so at the time of fetching.
    """
    if source.startswith(("http://", "https://")):
        request = urllib.request.Request(source, headers={"Accept": "application/json"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                data: bytes = response.read()
        except OSError as exc:
            raise ClientError(f"cannot fetch registry keys from {source}: {exc}") from None
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read {source}: {exc.strerror}") from None
    if data.lstrip().startswith(b"-----BEGIN"):
        raw = public_key_from_pem(data, source=source)
        return [RegistryKey(keyid=ed25519.key_id(raw), public_key=raw)]
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise KeyFileError(f"{source} is neither registry keys JSON nor a PEM key") from None
    return parse_registry_keys(document)


def verify_receipt(
    receipt: bytes,
    registry_keys: Iterable[RegistryKey] | Mapping[str, bytes],
    *,
    envelope: bytes | None = None,
    report_id: str | None = None,
) -> dict[str, Any]:
    """Check a receipt and return its payload; raise ``ReceiptInvalid`` naming the failed check.

    ``envelope`` is the exact bytes the bank submitted: its SHA-256 must be the receipt's
    ``envelope_sha256`` and its report id the receipt's. ``report_id`` pins the id explicitly.
    """
    trusted = _trusted(registry_keys)
    try:
        parsed = dsse.parse_envelope(receipt)
    except MalformedEnvelope as exc:
        raise ReceiptInvalid("malformed", f"not a DSSE envelope: {exc}") from None
    if parsed.payload_type != RECEIPT_PAYLOAD_TYPE:
        raise ReceiptInvalid(
            "payload_type", f"payloadType is {parsed.payload_type!r}, not {RECEIPT_PAYLOAD_TYPE}"
        )
    known = {s.keyid: trusted[s.keyid] for s in parsed.signatures if s.keyid in trusted}
    if not known:
        ids = ", ".join(sorted(s.keyid for s in parsed.signatures)) or "none"
        raise ReceiptInvalid("unknown_key", f"no signature by a trusted registry key ({ids})")
    try:
        dsse.verify_envelope(parsed, known)
    except SignatureInvalid:
        raise ReceiptInvalid("bad_signature", "the registry signature does not verify") from None
    payload = _receipt_payload(parsed.payload)
    if envelope is not None:
        digest = hashlib.sha256(envelope).hexdigest()
        if payload["envelope_sha256"] != digest:
            raise ReceiptInvalid(
                "envelope_mismatch", "the receipt is for other envelope bytes than these"
            )
        if report_id is None:
            report_id = _submitted_report_id(envelope)
    if report_id is not None and payload["report_id"] != report_id:
        raise ReceiptInvalid("report_id_mismatch", f"the receipt is not for report {report_id}")
    return payload


def _trusted(keys: Iterable[RegistryKey] | Mapping[str, bytes]) -> dict[str, bytes]:
    if isinstance(keys, Mapping):
        return dict(keys)
    return {k.keyid: k.public_key for k in keys}


def _receipt_payload(raw: bytes) -> dict[str, Any]:
    try:
        payload = strictjson.loads_strict(raw)
    except (StrictJSONError, UnicodeDecodeError, ValueError):
        raise ReceiptInvalid("malformed", "the receipt payload is not strict JSON") from None
    if not isinstance(payload, dict):
        raise ReceiptInvalid("malformed", "the receipt payload is not a JSON object")
    missing = [f for f in RECEIPT_FIELDS if f not in payload]
    if missing:
        raise ReceiptInvalid("malformed", f"the receipt payload lacks {', '.join(missing)}")
    if payload["version"] != 1:
        raise ReceiptInvalid("malformed", "unsupported receipt version")
    return payload


def _submitted_report_id(envelope: bytes) -> str | None:
    """The report id inside the bank's own envelope, when it can be read."""
    try:
        document = strictjson.loads_strict(dsse.parse_envelope(envelope).payload)
    except (MalformedEnvelope, StrictJSONError, UnicodeDecodeError, ValueError):
        return None
    value = document.get("report_id") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None
