"""Ed25519 keys, signatures and key ids (RFC 8032).

Public keys travel as their raw 32 bytes so that the key id is a function of the key alone,
not of any PEM or DER spelling of it.
"""

from __future__ import annotations

import functools
import hashlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crypto.errors import CryptoError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEY_ID_HEX_CHARS = 32


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: protecting the file is the caller's job (mode 0600, vault)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CryptoError("not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CryptoError("not an Ed25519 private key")
    return key


def public_key_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_to_pem(raw: bytes) -> bytes:
    """SubjectPublicKeyInfo PEM, the form operators exchange."""
    try:
        public = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise CryptoError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes") from None
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_from_pem(data: bytes) -> bytes:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CryptoError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CryptoError("not an Ed25519 public key")
    return public_key_raw(key)


def key_id(public_raw: bytes) -> str:
    """The key id used everywhere: lowercase hex of the first 128 bits of SHA-256(raw key).

    Derived from the key itself, so two different keys cannot be registered under one id.
    """
    return hashlib.sha256(public_raw).hexdigest()[:KEY_ID_HEX_CHARS]


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    return key.sign(message)


@functools.lru_cache(maxsize=4096)
def _public_key(public_raw: bytes) -> Ed25519PublicKey:
    """The loaded key, kept: loading it again cost as much as a tenth of a verification."""
    return Ed25519PublicKey.from_public_bytes(public_raw)


def verify(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """True only for a valid signature; any malformed input is simply False, never an error."""
    try:
        if len(public_raw) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
            return False
        _public_key(bytes(public_raw)).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
