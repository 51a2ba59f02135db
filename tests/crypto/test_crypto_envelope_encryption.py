"""crypto.envelope_encryption and crypto.keyring: round trips, and every mismatch refused."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import envelope_encryption as ee
from crypto.errors import CryptoError, DecryptionError
from crypto.keyring import MasterKeyring, add_version, new_keyring_text, parse_keyring

RING = parse_keyring(new_keyring_text())


def _aad(row: str = "row-1", column: str = "national_id") -> bytes:
    return ee.field_aad("subjects", column, row, 1)


# --- fields --------------------------------------------------------------------------------


def test_field_round_trip_and_format() -> None:
    key = ee.new_data_key()
    blob = ee.encrypt_field(key, b"AB123456", _aad())
    assert blob[:1] == b"\x01"
    assert len(blob) == 1 + 12 + len(b"AB123456") + 16
    assert b"AB123456" not in blob
    assert ee.decrypt_field(key, blob, _aad()) == b"AB123456"


def test_same_plaintext_twice_gives_different_ciphertexts() -> None:
    key = ee.new_data_key()
    assert ee.encrypt_field(key, b"x", _aad()) != ee.encrypt_field(key, b"x", _aad())


def test_ciphertext_moved_to_another_row_or_column_does_not_decrypt() -> None:
    key = ee.new_data_key()
    blob = ee.encrypt_field(key, b"secret", _aad())
    with pytest.raises(DecryptionError):
        ee.decrypt_field(key, blob, _aad(row="row-2"))
    with pytest.raises(DecryptionError):
        ee.decrypt_field(key, blob, _aad(column="phone"))
    with pytest.raises(DecryptionError):
        ee.decrypt_field(key, blob, ee.field_aad("subjects", "national_id", "row-1", 2))


def test_wrong_data_key_does_not_decrypt() -> None:
    blob = ee.encrypt_field(ee.new_data_key(), b"secret", _aad())
    with pytest.raises(DecryptionError):
        ee.decrypt_field(ee.new_data_key(), blob, _aad())


@pytest.mark.parametrize("position", [0, 1, 12, 13, -1])
def test_tampered_ciphertext_does_not_decrypt(position: int) -> None:
    key = ee.new_data_key()
    blob = bytearray(ee.encrypt_field(key, b"secret", _aad()))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionError):
        ee.decrypt_field(key, bytes(blob), _aad())


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\x01" + b"\x00" * 27, b"\x02" + b"\x00" * 40])
def test_truncated_or_unknown_format_is_a_decryption_error(blob: bytes) -> None:
    with pytest.raises(DecryptionError):
        ee.decrypt_field(ee.new_data_key(), blob, _aad())


def test_a_data_key_of_the_wrong_size_is_a_decryption_error_not_a_crash() -> None:
    blob = ee.encrypt_field(ee.new_data_key(), b"x", _aad())
    with pytest.raises(DecryptionError):
        ee.decrypt_field(b"short", blob, _aad())


def test_field_aad_is_length_prefixed() -> None:
    assert ee.field_aad("t", "c", "r", 1) == b"\x00\x01t\x00\x01c\x00\x01r\x00\x011"
    # With a plain separator these two places would collide.
    assert ee.field_aad("a|b", "c", "r", 1) != ee.field_aad("a", "b|c", "r", 1)


_place = st.tuples(
    st.text(max_size=8), st.text(max_size=8), st.text(max_size=8), st.integers(0, 99)
)


@given(_place, _place)
def test_property_field_aad_is_injective(
    first: tuple[str, str, str, int], second: tuple[str, str, str, int]
) -> None:
    if first != second:
        assert ee.field_aad(*first) != ee.field_aad(*second)


def test_field_aad_refuses_oversized_parts() -> None:
    with pytest.raises(CryptoError):
        ee.field_aad("t", "c", "r" * 70_000, 1)


# --- data keys -----------------------------------------------------------------------------


def test_new_data_keys_are_32_random_bytes() -> None:
    assert len(ee.new_data_key()) == 32
    assert ee.new_data_key() != ee.new_data_key()


def test_wrap_unwrap_round_trip() -> None:
    data_key = ee.new_data_key()
    version, wrapped = ee.wrap_data_key(RING, data_key, key_ref="subject:42")
    assert version == RING.current
    assert data_key not in wrapped
    assert ee.unwrap_data_key(RING, version, wrapped, key_ref="subject:42") == data_key


def test_unwrap_with_another_key_ref_fails() -> None:
    version, wrapped = ee.wrap_data_key(RING, ee.new_data_key(), key_ref="subject:42")
    with pytest.raises(DecryptionError):
        ee.unwrap_data_key(RING, version, wrapped, key_ref="subject:43")


def test_unwrap_with_another_master_key_fails() -> None:
    version, wrapped = ee.wrap_data_key(RING, ee.new_data_key(), key_ref="r")
    other = parse_keyring(new_keyring_text())
    with pytest.raises(DecryptionError):
        ee.unwrap_data_key(other, version, wrapped, key_ref="r")


def test_unwrap_with_an_unknown_version_fails() -> None:
    _, wrapped = ee.wrap_data_key(RING, ee.new_data_key(), key_ref="r")
    with pytest.raises(DecryptionError, match="version 7"):
        ee.unwrap_data_key(RING, 7, wrapped, key_ref="r")


def test_the_version_is_bound_into_the_wrapping() -> None:
    text = add_version(new_keyring_text())
    ring = parse_keyring(text)
    same_keys = MasterKeyring(keys={1: ring.keys[2], 2: ring.keys[2]}, current=2)
    version, wrapped = ee.wrap_data_key(same_keys, ee.new_data_key(), key_ref="r")
    with pytest.raises(DecryptionError):
        ee.unwrap_data_key(same_keys, version - 1, wrapped, key_ref="r")


@pytest.mark.parametrize("wrapped", [b"", b"\x00" * 12, b"\x00" * 27])
def test_truncated_wrapped_key_fails(wrapped: bytes) -> None:
    with pytest.raises(DecryptionError):
        ee.unwrap_data_key(RING, RING.current, wrapped, key_ref="r")


def test_tampered_wrapped_key_fails() -> None:
    version, wrapped = ee.wrap_data_key(RING, ee.new_data_key(), key_ref="r")
    tampered = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    with pytest.raises(DecryptionError):
        ee.unwrap_data_key(RING, version, tampered, key_ref="r")


def test_rotation_keeps_old_data_keys_readable_and_wraps_new_ones_under_the_new_version() -> None:
    text = new_keyring_text()
    old_ring = parse_keyring(text)
    data_key = ee.new_data_key()
    old_version, old_wrapped = ee.wrap_data_key(old_ring, data_key, key_ref="r")

    rotated = parse_keyring(add_version(text))
    assert rotated.current == old_version + 1
    assert ee.unwrap_data_key(rotated, old_version, old_wrapped, key_ref="r") == data_key
    new_version, new_wrapped = ee.wrap_data_key(rotated, data_key, key_ref="r")
    assert new_version == rotated.current
    assert ee.unwrap_data_key(rotated, new_version, new_wrapped, key_ref="r") == data_key


# --- keyring text --------------------------------------------------------------------------


def test_new_keyring_text_has_a_comment_header_and_version_1() -> None:
    text = new_keyring_text()
    assert text.startswith("#")
    ring = parse_keyring(text)
    assert ring.current == 1
    assert len(ring.current_key) == 32
    assert parse_keyring(new_keyring_text()).current_key != ring.current_key


def test_add_version_appends_and_keeps_existing_lines() -> None:
    text = new_keyring_text()
    rotated = add_version(add_version(text))
    assert rotated.startswith(text)
    ring = parse_keyring(rotated)
    assert sorted(ring.keys) == [1, 2, 3]
    assert ring.current == 3
    assert len(set(ring.keys.values())) == 3


def test_the_highest_version_is_current_whatever_the_line_order() -> None:
    k = [base64.b64encode(bytes([i]) * 32).decode() for i in range(3)]
    ring = parse_keyring(f"\n# comment\nv3:{k[0]}\n  v10:{k[1]}  \n\nv2:{k[2]}\n")
    assert ring.current == 10
    assert ring.current_key == bytes([1]) * 32
    assert ring.keys[3] == bytes([0]) * 32


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "v1\n",
        "1:" + base64.b64encode(b"k" * 32).decode(),
        "v:" + base64.b64encode(b"k" * 32).decode(),
        "v\u00b2:" + base64.b64encode(b"k" * 32).decode(),
        "v1:" + base64.b64encode(b"k" * 31).decode(),
        "v1:" + base64.b64encode(b"k" * 33).decode(),
        "v1:not base64!",
        "v1:" + base64.b64encode(b"k" * 32).decode()[:-2],
        "v1:{k}\nv1:{k}".format(k=base64.b64encode(b"k" * 32).decode()),
    ],
)
def test_bad_keyring_text_is_refused(text: str) -> None:
    with pytest.raises(CryptoError):
        parse_keyring(text)


def test_keyring_errors_and_repr_never_show_key_material() -> None:
    secret = base64.b64encode(b"s" * 31).decode()
    with pytest.raises(CryptoError) as caught:
        parse_keyring(f"v1:{secret}")
    assert secret not in str(caught.value)
    ring = parse_keyring(new_keyring_text())
    assert base64.b64encode(ring.current_key).decode() not in repr(ring)
    assert repr(ring.current_key) not in repr(ring)


def test_a_keyring_must_hold_its_current_version() -> None:
    with pytest.raises(CryptoError):
        MasterKeyring(keys={1: b"k" * 32}, current=2)
