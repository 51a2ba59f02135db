"""Blind indexes: a keyed HMAC of a value, so equal values can be found and nothing more.

The caller normalises the value first; the index leaks equality only. One secret, kept outside
the database, gives each field its own key (HKDF), so equal values in different fields do not
match each other.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.errors import CryptoError

MIN_SECRET_BYTES = 32
_INFO_PREFIX = b"registry blind index v1|"


def new_secret() -> bytes:
    return os.urandom(MIN_SECRET_BYTES)


class BlindIndex:
    """Per-field HMAC-SHA256 keys derived once with HKDF-SHA256 and cached."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise CryptoError(f"the blind-index secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._keys: dict[str, bytes] = {}

    def _key(self, field: str) -> bytes:
        key = self._keys.get(field)
        if key is None:
            hkdf = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=_INFO_PREFIX + field.encode("utf-8"),
            )
            key = self._keys[field] = hkdf.derive(self._secret)
        return key

    def digest(self, field: str, value: str) -> bytes:
        """32 bytes; equal (field, value) pairs give equal digests under one secret."""
        return hmac.new(self._key(field), value.encode("utf-8"), hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "BlindIndex(<secret redacted>)"
