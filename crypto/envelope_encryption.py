"""AES-256-GCM envelope encryption: data keys per record, wrapped by a versioned master key.

Associated data binds every ciphertext to its place (table, column, row, key version): a
ciphertext moved to another row or column does not decrypt.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.errors import DecryptionError
from crypto.keyring import MasterKeyring

FORMAT_V1 = b"\x01"
NONCE_BYTES = 12


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _wrap_aad(key_ref: str, version: int) -> bytes:
    return b"registry/dek/v1|" + key_ref.encode() + b"|" + str(version).encode()


def wrap_data_key(keyring: MasterKeyring, data_key: bytes, *, key_ref: str) -> tuple[int, bytes]:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(keyring.current_key).encrypt(
        nonce, data_key, _wrap_aad(key_ref, keyring.current)
    )
    return keyring.current, nonce + sealed


def unwrap_data_key(keyring: MasterKeyring, version: int, wrapped: bytes, *, key_ref: str) -> bytes:
    master = keyring.keys.get(version)
    if master is None:
        raise DecryptionError(f"master key version {version} is not in the keyring")
    try:
        return AESGCM(master).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(key_ref, version)
        )
    except (InvalidTag, ValueError):
        raise DecryptionError("the data key does not unwrap") from None


def field_aad(table: str, column: str, row_ref: str, key_version: int) -> bytes:
    """Length-prefixed, so no two different places encode to the same bytes."""
    parts = [table.encode(), column.encode(), row_ref.encode(), str(key_version).encode()]
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def encrypt_field(data_key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_V1 + nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


def decrypt_field(data_key: bytes, blob: bytes, aad: bytes) -> bytes:
    if blob[:1] != FORMAT_V1 or len(blob) < 1 + NONCE_BYTES + 16:
        raise DecryptionError("unknown ciphertext format")
    try:
        return AESGCM(data_key).decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], aad)
    except (InvalidTag, ValueError):
        raise DecryptionError("the field does not decrypt") from None
