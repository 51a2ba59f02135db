"""Build and sign report envelopes (DSSE) from a payload dict or a JSON file.

The registry verifies the signature over the exact payload bytes it receives and only then parses
them; no canonical form is involved. So a file is signed byte for byte as given, and a dict is
serialised once (compact UTF-8) and those bytes are what get signed and sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.errors import ReportError
from crypto import dsse, strictjson
from crypto.errors import StrictJSONError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# Duplicated from registry.payload.PAYLOAD_TYPE on purpose: the client must not import the
# registry; a test keeps the two equal.
REPORT_PAYLOAD_TYPE = "application/vnd.delinquency-registry.report+json;version=1"


def serialize_payload(document: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (``ensure_ascii=False``), refusing floats: money travels as strings."""
    _refuse_floats(document, "")
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def _refuse_floats(value: Any, path: str) -> None:
    if isinstance(value, float):
        raise ReportError(
            f'{path or "payload"} is a float; amounts are decimal strings such as "1234.50"'
        )
    if isinstance(value, Mapping):
        for key, item in value.items():
            _refuse_floats(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _refuse_floats(item, f"{path}[{index}]")


def check_payload_bytes(payload: bytes) -> dict[str, Any]:
    """Parse the bytes the way the registry will (strict JSON, one object) to fail early here.

    This only catches what would certainly be refused (not UTF-8, duplicate keys, floats, not an
    object); the field rules stay the registry's to apply.
    """
    try:
        document = strictjson.loads_strict(payload)
    except StrictJSONError as exc:
        raise ReportError(
            f"the payload is not acceptable JSON ({exc.rule}): {exc.detail}"
        ) from None
    if not isinstance(document, dict):
        raise ReportError("the payload must be a JSON object")
    return document


def sign_payload_bytes(payload: bytes, key: Ed25519PrivateKey, keyid: str) -> bytes:
    """The envelope (compact JSON bytes) over exactly ``payload``, checked as strict JSON first."""
    check_payload_bytes(payload)
    return dsse.sign_envelope(REPORT_PAYLOAD_TYPE, payload, key, keyid)


def sign_payload(document: Mapping[str, Any], key: Ed25519PrivateKey, keyid: str) -> bytes:
    """Serialise ``document`` with ``serialize_payload`` and sign those bytes."""
    return sign_payload_bytes(serialize_payload(document), key, keyid)


def sign_file(path: Path, key: Ed25519PrivateKey, keyid: str) -> bytes:
    """Sign the file's bytes exactly as stored (no re-serialisation, BOM or newline changes)."""
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror}") from None
    return sign_payload_bytes(payload, key, keyid)


def payload_of(envelope: bytes) -> dict[str, Any]:
    """The report a signed envelope carries (unverified): for showing ids, never for trust."""
    try:
        parsed = dsse.parse_envelope(envelope)
    except Exception as exc:
        raise ReportError(f"not a DSSE envelope: {exc}") from None
    return check_payload_bytes(parsed.payload)
