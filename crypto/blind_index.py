"""Blind indexes: keyed HMAC of a normalised value, so equal values can be found, nothing more."""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.errors import CryptoError

MIN_SECRET_BYTES = 32


def new_secret() -> bytes:
    return os.urandom(32)


class BlindIndex:
    """Per-field HMAC-SHA256 keys derived with HKDF from one secret kept outside the database."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise CryptoError(f"the blind-index secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._keys: dict[str, bytes] = {}

    def _key(self, field: str) -> bytes:
        if field not in self._keys:
            self._keys[field] = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"registry blind index v1|" + field.encode(),
            ).derive(self._secret)  # fmt: skip
        return self._keys[field]

    def digest(self, field: str, value: str) -> bytes:
        return hmac.new(self._key(field), value.encode("utf-8"), hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "BlindIndex(<secret redacted>)"
