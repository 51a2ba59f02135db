"""AES-256-GCM envelope encryption: a data key per record, wrapped by a versioned master key.

Shredding a record's data key makes its fields unreadable everywhere, backups included. The
associated data binds every ciphertext to its place (table, column, row, key version), so a
ciphertext copied to another row or column does not decrypt.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.errors import CryptoError, DecryptionError
from crypto.keyring import MasterKeyring

FORMAT_V1 = b"\x01"
NONCE_BYTES = 12
TAG_BYTES = 16
DATA_KEY_BYTES = 32
_WRAP_DOMAIN = b"registry/dek/v1|"
_MAX_AAD_PART = 0xFFFF


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_BYTES)


def _wrap_aad(key_ref: str, version: int) -> bytes:
    """Unambiguous: the version is the digits after the last ``|``."""
    return _WRAP_DOMAIN + key_ref.encode("utf-8") + b"|" + str(version).encode("ascii")


def wrap_data_key(keyring: MasterKeyring, data_key: bytes, *, key_ref: str) -> tuple[int, bytes]:
    """Seal ``data_key`` under the current master key; returns (version, nonce || ciphertext)."""
    nonce = os.urandom(NONCE_BYTES)
    aad = _wrap_aad(key_ref, keyring.current)
    return keyring.current, nonce + AESGCM(keyring.current_key).encrypt(nonce, data_key, aad)


def unwrap_data_key(keyring: MasterKeyring, version: int, wrapped: bytes, *, key_ref: str) -> bytes:
    master = keyring.keys.get(version)
    if master is None:
        raise DecryptionError(f"master key version {version} is not in the keyring")
    if len(wrapped) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionError("the wrapped data key is truncated")
    nonce, sealed = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
    try:
        return AESGCM(master).decrypt(nonce, sealed, _wrap_aad(key_ref, version))
    except (InvalidTag, ValueError):
        raise DecryptionError(
            "the data key does not unwrap (wrong key, reference or bytes)"
        ) from None


def field_aad(table: str, column: str, row_ref: str, key_version: int) -> bytes:
    """Each part as a 2-byte big-endian length then its UTF-8 bytes; the version in decimal.

    Length prefixes mean no two different places encode to the same bytes, whatever the parts
    contain (a plain separator could be forged by a row reference that contains it).
    """
    parts = [table, column, row_ref, str(key_version)]
    out = bytearray()
    for part in parts:
        encoded = part.encode("utf-8")
        if len(encoded) > _MAX_AAD_PART:
            raise CryptoError("an associated-data part is longer than 65535 bytes")
        out += len(encoded).to_bytes(2, "big") + encoded
    return bytes(out)


def encrypt_field(data_key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """``0x01 || nonce(12) || ciphertext || tag(16)``; the version byte allows a later format."""
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_V1 + nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


def decrypt_field(data_key: bytes, blob: bytes, aad: bytes) -> bytes:
    if blob[:1] != FORMAT_V1:
        raise DecryptionError("unknown ciphertext format")
    if len(blob) < 1 + NONCE_BYTES + TAG_BYTES:
        raise DecryptionError("the ciphertext is truncated")
    nonce, sealed = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        return AESGCM(data_key).decrypt(nonce, sealed, aad)
    except (InvalidTag, ValueError):
        raise DecryptionError("the field does not decrypt (wrong key, place or bytes)") from None
