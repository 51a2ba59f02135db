"""The registry's own secrets: receipt signing key, master keyring, blind-index secret.

They live in files under the instance folder (mode 0600) or in environment variables, never in
the database, so that a copy of the database alone reveals no personal data.
"""

from __future__ import annotations

import base64
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import blind_index, ed25519, keyring
from crypto.errors import CryptoError
from registry.errors import SetupError
from registry.settings import Settings


@dataclass(frozen=True)
class KeyMaterial:
    signing_key: Ed25519PrivateKey
    keyring: keyring.MasterKeyring
    blind_index: blind_index.BlindIndex

    @functools.cached_property
    def signing_keyid(self) -> str:
        """Derived once: the key never changes (frozen), and signers ask on every signature."""
        return ed25519.key_id(ed25519.public_key_raw(self.signing_key))

    def __repr__(self) -> str:
        return f"KeyMaterial(signing_keyid={self.signing_keyid!r}, <secrets redacted>)"


def _write_secret(path: Path, data: bytes) -> bool:
    """Create ``path`` with mode 0600 unless it exists; True when created."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return True


def init_instance(settings: Settings) -> list[Path]:
    """Create whatever secret files are missing; never overwrite one. Returns the files created."""
    settings.instance_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = []
    assert settings.signing_key_file and settings.master_keys_file
    assert settings.blind_index_key_file
    if _write_secret(
        settings.signing_key_file, ed25519.private_key_to_pem(ed25519.generate_private_key())
    ):
        created.append(settings.signing_key_file)
    if settings.master_keys_text is None and _write_secret(
        settings.master_keys_file, keyring.new_keyring_text().encode()
    ):
        created.append(settings.master_keys_file)
    if settings.blind_index_key_text is None and _write_secret(
        settings.blind_index_key_file,
        base64.b64encode(blind_index.new_secret()) + b"\n",
    ):
        created.append(settings.blind_index_key_file)
    return created


def _read(path: Path | None, what: str) -> bytes:
    if path is None or not path.exists():
        raise SetupError(f"{what} not found at {path}; run `registry init` (or `make run`)")
    return path.read_bytes()


def load_key_material(settings: Settings) -> KeyMaterial:
    """Load every secret; a missing or unusable one is a ``SetupError`` naming the file only."""
    try:
        signing = ed25519.private_key_from_pem(
            _read(settings.signing_key_file, "registry signing key")
        )
        ring_text = (
            settings.master_keys_text or _read(settings.master_keys_file, "master keyring").decode()
        )
        ring = keyring.parse_keyring(ring_text)
        index_text = (
            settings.blind_index_key_text
            or _read(settings.blind_index_key_file, "blind-index secret").decode()
        )
        index = blind_index.BlindIndex(base64.b64decode(index_text.strip(), validate=True))
    except (CryptoError, ValueError) as exc:
        raise SetupError(f"unusable registry secret: {type(exc).__name__}") from None
    return KeyMaterial(signing_key=signing, keyring=ring, blind_index=index)
