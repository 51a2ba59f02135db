"""DSSE v1 envelopes: sign and verify the PAE encoding of payload type and payload bytes."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import ed25519
from crypto.errors import MalformedEnvelope, SignatureInvalid, StrictJSONError
from crypto.strictjson import loads_strict

MAX_SIGNATURES = 8
_URLSAFE_TO_STD = str.maketrans("-_", "+/")


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-Authentication Encoding: what the signature covers (no canonical JSON needed)."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class EnvelopeSignature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]


def _b64decode(value: object, field: str) -> bytes:
    """Standard or URL-safe base64, padding optional; only the canonical encoding is accepted.

    NOTE: without the canonical check, flipping unused trailing bits would give a different
    envelope with the same meaning; every byte of an accepted envelope must matter.
    """
    if not isinstance(value, str) or not value.isascii():
        raise MalformedEnvelope(f"{field} must be a base64 string")
    if ("-" in value or "_" in value) and ("+" in value or "/" in value):
        raise MalformedEnvelope(f"{field} mixes the two base64 alphabets")
    standard = value.translate(_URLSAFE_TO_STD)
    try:
        data = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEnvelope(f"{field} is not valid base64") from None
    canonical = base64.b64encode(data).decode("ascii")
    if standard not in (canonical, canonical.rstrip("=")):
        raise MalformedEnvelope(f"{field} is not canonical base64")
    return data


def parse_envelope(raw: bytes) -> Envelope:
    try:
        doc = loads_strict(raw)
    except StrictJSONError as exc:
        raise MalformedEnvelope(f"envelope is not acceptable JSON: {exc.detail}") from None
    if not isinstance(doc, dict):
        raise MalformedEnvelope("envelope must be a JSON object")
    unknown = set(doc) - {"payload", "payloadType", "signatures"}
    if unknown:
        raise MalformedEnvelope(f"unknown envelope field {sorted(unknown)[0][:40]!r}")
    payload_type = doc.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise MalformedEnvelope("payloadType must be a non-empty string")
    if "payload" not in doc:
        raise MalformedEnvelope("payload is required")
    payload = _b64decode(doc["payload"], "payload")
    sigs = doc.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise MalformedEnvelope("signatures must be a non-empty list")
    if len(sigs) > MAX_SIGNATURES:
        raise MalformedEnvelope(f"at most {MAX_SIGNATURES} signatures")
    parsed = []
    for i, item in enumerate(sigs):
        if not isinstance(item, dict) or set(item) - {"keyid", "sig"} or "sig" not in item:
            raise MalformedEnvelope(f"signatures[{i}] must be an object with sig and keyid")
        keyid = item.get("keyid", "")
        if not isinstance(keyid, str):
            raise MalformedEnvelope(f"signatures[{i}].keyid must be a string")
        parsed.append(EnvelopeSignature(keyid, _b64decode(item["sig"], f"signatures[{i}].sig")))
    return Envelope(payload_type, payload, tuple(parsed))


def sign_envelope(payload_type: str, payload: bytes, key: Ed25519PrivateKey, keyid: str) -> bytes:
    sig = ed25519.sign(key, pae(payload_type, payload))
    doc = {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(sig).decode("ascii")}],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def verify_envelope(envelope: Envelope, public_keys: Mapping[str, bytes]) -> str:
    message = pae(envelope.payload_type, envelope.payload)
    known = [s for s in envelope.signatures if s.keyid in public_keys]
    if not known:
        raise SignatureInvalid("no signature has a known keyid")
    for signature in known:
        if ed25519.verify(public_keys[signature.keyid], signature.sig, message):
            return signature.keyid
    raise SignatureInvalid("no signature verifies")
