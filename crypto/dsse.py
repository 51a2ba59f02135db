"""DSSE v1 envelopes: sign and verify the PAE encoding of payload type and payload bytes.

https://github.com/secure-systems-lab/dsse (protocol.md, envelope.md). The signature covers the
payload bytes, never the JSON around them, so no canonicalisation is trusted for verification.

Parsing is stricter than the spec requires, so that every byte of an envelope as
:func:`sign_envelope` writes it matters: a single-byte change either breaks the JSON, names an
unknown field or key, changes the signed bytes, or spells base64 in a second way, and each of
those is refused. Two such second spellings exist in plain RFC 4648 and are refused here:

* stray trailing bits (``QQ==`` and ``QR==`` both decode to ``A``): only canonical text is taken;
* the two alphabets (``+/`` versus ``-_``): a value whose only alphabet-specific character is
  swapped decodes to the same bytes. So each alphabet has exactly one padding rule (standard is
  padded, URL-safe is unpadded) and one envelope uses one form throughout. A 64-byte Ed25519
  signature is 88 characters padded and 86 unpadded, so it pins the form of the whole envelope.

What stays outside that guarantee: JSON that other producers may write with insignificant
whitespace or ``\\u`` escapes can be re-spelled without changing its meaning, and a second
signature by a key the verifier does not hold is not checked at all.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import ed25519
from crypto.errors import MalformedEnvelope, SignatureInvalid, StrictJSONError
from crypto.strictjson import loads_strict

MAX_SIGNATURES = 8
ENVELOPE_FIELDS = frozenset({"payload", "payloadType", "signatures"})
SIGNATURE_FIELDS = frozenset({"keyid", "sig"})

STANDARD = "standard"  # RFC 4648 section 4 alphabet, with padding
URLSAFE = "urlsafe"  # RFC 4648 section 5 alphabet, without padding

_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-Authentication Encoding: binds the type to the payload without any JSON."""
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


def _decode_base64(value: object, field: str) -> tuple[bytes, frozenset[str]]:
    """Decode ``value`` and return the forms (STANDARD, URLSAFE) in which it is canonical."""
    if not isinstance(value, str) or not value.isascii():
        raise MalformedEnvelope(f"{field} must be a base64 string")
    has_standard = "+" in value or "/" in value
    has_urlsafe = "-" in value or "_" in value
    if has_standard and has_urlsafe:
        raise MalformedEnvelope(f"{field} mixes the standard and URL-safe base64 alphabets")
    text = value.translate(_URLSAFE_TO_STANDARD).rstrip("=")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEnvelope(f"{field} is not valid base64") from None
    forms = set()
    if not has_urlsafe and value == base64.b64encode(data).decode("ascii"):
        forms.add(STANDARD)
    if not has_standard and value == base64.urlsafe_b64encode(data).decode("ascii").rstrip("="):
        forms.add(URLSAFE)
    if not forms:
        raise MalformedEnvelope(
            f"{field} is not canonical base64 (standard alphabet with padding, or URL-safe "
            "alphabet without padding, and no stray trailing bits)"
        )
    return data, frozenset(forms)


def _printable(value: object, field: str, *, required: bool) -> str:
    """Media types, URIs and key ids are printable ASCII; anything else is refused."""
    if not isinstance(value, str) or not _PRINTABLE_ASCII.fullmatch(value):
        raise MalformedEnvelope(f"{field} must be a string of printable ASCII characters")
    if required and not value:
        raise MalformedEnvelope(f"{field} must not be empty")
    return value


def _parse_signature(item: object, index: int) -> tuple[EnvelopeSignature, frozenset[str]]:
    field = f"signatures[{index}]"
    if not isinstance(item, dict):
        raise MalformedEnvelope(f"{field} must be an object")
    unknown = set(item) - SIGNATURE_FIELDS
    if unknown:
        raise MalformedEnvelope(f"{field} has an unknown field {sorted(unknown)[0][:40]!r}")
    if "sig" not in item:
        raise MalformedEnvelope(f"{field}.sig is required")
    keyid = _printable(item.get("keyid", ""), f"{field}.keyid", required=False)
    sig, forms = _decode_base64(item["sig"], f"{field}.sig")
    return EnvelopeSignature(keyid=keyid, sig=sig), forms


def parse_envelope(raw: bytes) -> Envelope:
    """Parse a DSSE JSON envelope strictly; verify it with :func:`verify_envelope` next."""
    try:
        doc = loads_strict(raw)
    except StrictJSONError as exc:
        raise MalformedEnvelope(f"envelope is not acceptable JSON: {exc.detail}") from None
    if not isinstance(doc, dict):
        raise MalformedEnvelope("envelope must be a JSON object")
    unknown = set(doc) - ENVELOPE_FIELDS
    if unknown:
        raise MalformedEnvelope(f"envelope has an unknown field {sorted(unknown)[0][:40]!r}")
    for name in ("payloadType", "payload", "signatures"):
        if name not in doc:
            raise MalformedEnvelope(f"{name} is required")
    payload_type = _printable(doc["payloadType"], "payloadType", required=True)
    payload, forms = _decode_base64(doc["payload"], "payload")
    items = doc["signatures"]
    if not isinstance(items, list) or not items:
        raise MalformedEnvelope("signatures must be a non-empty list")
    if len(items) > MAX_SIGNATURES:
        raise MalformedEnvelope(f"signatures holds more than {MAX_SIGNATURES} entries")
    signatures = []
    for index, item in enumerate(items):
        signature, sig_forms = _parse_signature(item, index)
        signatures.append(signature)
        forms &= sig_forms
    if not forms:
        raise MalformedEnvelope(
            "payload and signatures[].sig must all use one base64 form: standard with padding, "
            "or URL-safe without padding"
        )
    return Envelope(payload_type=payload_type, payload=payload, signatures=tuple(signatures))


def sign_envelope(payload_type: str, payload: bytes, key: Ed25519PrivateKey, keyid: str) -> bytes:
    """Compact JSON, sorted keys, standard padded base64: the same inputs give the same bytes.

    Raises ValueError for a payload type or key id that :func:`parse_envelope` would refuse.
    """
    if not payload_type or not _PRINTABLE_ASCII.fullmatch(payload_type):
        raise ValueError("payload_type must be non-empty printable ASCII")
    if not _PRINTABLE_ASCII.fullmatch(keyid):
        raise ValueError("keyid must be printable ASCII")
    sig = ed25519.sign(key, pae(payload_type, payload))
    doc = {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(sig).decode("ascii")}],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


def verify_envelope(envelope: Envelope, public_keys: Mapping[str, bytes]) -> str:
    """Return the keyid of the first signature by a known key that verifies over the PAE.

    Signatures whose keyid is not in ``public_keys`` are skipped, never tried against other keys.
    """
    message = pae(envelope.payload_type, envelope.payload)
    known = [s for s in envelope.signatures if s.keyid in public_keys]
    if not known:
        raise SignatureInvalid("no signature has a known keyid")
    for signature in known:
        if ed25519.verify(public_keys[signature.keyid], signature.sig, message):
            return signature.keyid
    raise SignatureInvalid("no signature by a known key verifies")
