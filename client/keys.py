"""The member's Ed25519 key pair on disk: generate, load, and derive the key id.

The private key never leaves the bank; the operator registers only the public PEM
(``registry keys add CODE public.pem``). The key id is derived from the public key, never chosen,
so both sides compute the same id independently.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from client.errors import KeyFileError
from crypto import ed25519

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# RFC 8410 PKCS#8 prefix of an Ed25519 private key: the 32-byte seed follows it.
_PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")


@dataclass(frozen=True)
class KeyPair:
    """Where a generated pair was written, and its key id."""

    private_path: Path
    public_path: Path
    keyid: str


def key_paths(out_dir: Path, name: str = "member") -> tuple[Path, Path]:
    """``NAME.key.pem`` and ``NAME.pub.pem`` in ``out_dir``: one naming rule everywhere."""
    return out_dir / f"{name}.key.pem", out_dir / f"{name}.pub.pem"


def generate_key_pair(out_dir: Path, name: str = "member") -> KeyPair:
    """Create a fresh pair; the private file is mode 0600 and existing files are never replaced.

    Refusing to overwrite matters: replacing a registered key by accident would lock the bank
    out until the operator registers the new one.
    """
    private_path, public_path = key_paths(out_dir, name)
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key")
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ed25519.generate_private_key()
    raw = ed25519.public_key_raw(key)
    _write_new(private_path, ed25519.private_key_to_pem(key), 0o600)
    _write_new(public_path, ed25519.public_key_to_pem(raw), 0o644)
    return KeyPair(private_path, public_path, ed25519.key_id(raw))


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively with ``mode`` set before any byte is written (no umask race)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
    finally:
        if fd != -1:
            os.close(fd)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PKCS#8 PEM Ed25519 private key."""
    data = _read(path)
    try:
        return ed25519.private_key_from_pem(data)
    except Exception:
        raise KeyFileError(f"{path} is not an Ed25519 private key in PEM form") from None


def load_public_key(path: Path) -> bytes:
    """Read a SubjectPublicKeyInfo PEM Ed25519 public key; returns the 32 raw bytes."""
    return public_key_from_pem(_read(path), source=str(path))


def public_key_from_pem(data: bytes, *, source: str = "the data") -> bytes:
    """The raw public key of a PEM, with a clear error instead of a library exception."""
    try:
        return ed25519.public_key_from_pem(data)
    except Exception:
        raise KeyFileError(f"{source} is not an Ed25519 public key in PEM form") from None


def private_key_from_seed(seed: bytes) -> Ed25519PrivateKey:
    """A private key from its 32-byte RFC 8032 seed (test vectors, keys exported as raw bytes)."""
    if len(seed) != 32:
        raise KeyFileError("an Ed25519 private key seed is exactly 32 bytes")
    body = base64.encodebytes(_PKCS8_ED25519_PREFIX + seed).decode("ascii")
    pem = f"-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\n"
    return ed25519.private_key_from_pem(pem.encode("ascii"))


def key_id(key: Ed25519PrivateKey) -> str:
    """The key id of a private key's public half: first 32 hex digits of SHA-256(raw public)."""
    return ed25519.key_id(ed25519.public_key_raw(key))


def key_id_of_public_pem(data: bytes) -> str:
    return ed25519.key_id(public_key_from_pem(data))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
