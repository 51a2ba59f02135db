"""crypto.blind_index: deterministic, per field, per secret; short secrets refused."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.blind_index import BlindIndex, new_secret
from crypto.errors import CryptoError

SECRET = bytes(range(32))


def test_digest_is_deterministic_and_32_bytes() -> None:
    index = BlindIndex(SECRET)
    assert len(index.digest("national_id", "AB123456")) == 32
    assert index.digest("national_id", "AB123456") == index.digest("national_id", "AB123456")
    assert BlindIndex(SECRET).digest("national_id", "AB123456") == index.digest(
        "national_id", "AB123456"
    )


def test_digest_differs_per_value_field_and_secret() -> None:
    index = BlindIndex(SECRET)
    digest = index.digest("national_id", "AB123456")
    assert index.digest("national_id", "AB123457") != digest
    assert index.digest("phone", "AB123456") != digest
    assert BlindIndex(bytes(reversed(SECRET))).digest("national_id", "AB123456") != digest


def test_digest_is_hmac_sha256_under_an_hkdf_key_per_field() -> None:
    field_key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None,
        info=b"registry blind index v1|national_id",
    ).derive(SECRET)  # fmt: skip
    expected = hmac.new(field_key, b"AB123456", hashlib.sha256).digest()
    assert BlindIndex(SECRET).digest("national_id", "AB123456") == expected


def test_values_are_utf8() -> None:
    index = BlindIndex(SECRET)
    assert index.digest("name", "Jos\u00e9") != index.digest("name", "Jose")


def test_short_secret_is_refused() -> None:
    with pytest.raises(CryptoError):
        BlindIndex(b"x" * 31)
    BlindIndex(b"x" * 64)


def test_new_secret_is_32_random_bytes() -> None:
    assert len(new_secret()) == 32
    assert new_secret() != new_secret()


def test_repr_hides_the_secret() -> None:
    assert repr(SECRET) not in repr(BlindIndex(SECRET))
