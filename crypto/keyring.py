"""Master keys by version, so data keys can be re-wrapped under a new master key (rotation)."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass

from crypto.errors import CryptoError

KEY_BYTES = 32
HEADER = "# registry master keys: one 'v<N>:<base64 32 bytes>' a line; the highest N is current\n"


@dataclass(frozen=True)
class MasterKeyring:
    keys: Mapping[int, bytes]
    current: int

    @property
    def current_key(self) -> bytes:
        return self.keys[self.current]

    def __repr__(self) -> str:
        return f"MasterKeyring(versions={sorted(self.keys)}, current={self.current})"


def parse_keyring(text: str) -> MasterKeyring:
    keys: dict[int, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        version, sep, encoded = line.partition(":")
        if not sep or not version.startswith("v") or not version[1:].isdigit():
            raise CryptoError(f"keyring line {number} is not 'v<N>:<base64>'")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise CryptoError(f"keyring line {number} is not base64") from None
        if len(key) != KEY_BYTES:
            raise CryptoError(f"keyring line {number} is not a {KEY_BYTES}-byte key")
        if int(version[1:]) in keys:
            raise CryptoError(f"keyring line {number} repeats a version")
        keys[int(version[1:])] = key
    if not keys:
        raise CryptoError("the keyring holds no key")
    return MasterKeyring(keys=keys, current=max(keys))


def _line(version: int) -> str:
    return f"v{version}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}\n"


def new_keyring_text() -> str:
    return HEADER + _line(1)


def add_version(text: str) -> str:
    """Append a new current version; old versions stay to unwrap existing data keys."""
    ring = parse_keyring(text)
    return text.rstrip("\n") + "\n" + _line(ring.current + 1)
