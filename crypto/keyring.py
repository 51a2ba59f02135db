"""Master keys by version, so data keys can be re-wrapped under a new master key (rotation).

Text format, kept outside the database: one ``v<N>:<base64 of 32 bytes>`` per line, ``#``
comments and blank lines ignored; the highest N is current. Older versions stay so that data
keys wrapped under them can still be unwrapped. Errors name the line, never the key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from crypto.errors import CryptoError

KEY_BYTES = 32
HEADER = (
    "# registry master keys: one 'v<N>:<base64 of 32 bytes>' a line; the highest N is current.\n"
    "# Keep older versions until every data key has been re-wrapped. Never commit this file.\n"
)
_LINE = re.compile(r"v([0-9]{1,9}):([A-Za-z0-9+/=]+)")


@dataclass(frozen=True)
class MasterKeyring:
    keys: Mapping[int, bytes]
    current: int

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise CryptoError(f"the keyring has no version {self.current}")
        if any(len(key) != KEY_BYTES for key in self.keys.values()):
            raise CryptoError(f"master keys are {KEY_BYTES} bytes")

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
        match = _LINE.fullmatch(line)
        if match is None:
            raise CryptoError(f"keyring line {number} is not 'v<N>:<base64>'")
        version = int(match.group(1))
        try:
            key = base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            raise CryptoError(f"keyring line {number} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise CryptoError(f"keyring line {number} does not hold a {KEY_BYTES}-byte key")
        if version in keys:
            raise CryptoError(f"keyring line {number} repeats version {version}")
        keys[version] = key
    if not keys:
        raise CryptoError("the keyring holds no key")
    return MasterKeyring(keys=keys, current=max(keys))


def _new_line(version: int) -> str:
    return f"v{version}:{base64.b64encode(os.urandom(KEY_BYTES)).decode('ascii')}\n"


def new_keyring_text() -> str:
    """A fresh keyring: the comment header and a random version 1."""
    return HEADER + _new_line(1)


def add_version(text: str) -> str:
    """Append a new current version (the rotation path); existing lines stay untouched."""
    ring = parse_keyring(text)
    return text.rstrip("\n") + "\n" + _new_line(ring.current + 1)
