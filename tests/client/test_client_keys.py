"""Key files: generated with safe modes, never overwritten, loaded back, ids derived."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from client import keys
from client.errors import KeyFileError
from crypto import ed25519

RFC8032_TEST1_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC8032_TEST1_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
RFC8032_TEST1_SIG = (
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9"
    "b46bd25bf5f0595bbe24655141438e7a100b"
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_writes_a_private_file_only_the_owner_reads(tmp_path: Path) -> None:
    pair = keys.generate_key_pair(tmp_path / "keys", "bank-a")

    assert pair.private_path == tmp_path / "keys" / "bank-a.key.pem"
    assert pair.public_path == tmp_path / "keys" / "bank-a.pub.pem"
    assert mode(pair.private_path) == 0o600
    assert mode(pair.public_path) == 0o644
    assert pair.private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pair.public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_the_key_id_is_derived_from_the_public_key(tmp_path: Path) -> None:
    pair = keys.generate_key_pair(tmp_path)
    private = keys.load_private_key(pair.private_path)
    raw = keys.load_public_key(pair.public_path)

    assert raw == ed25519.public_key_raw(private)
    assert pair.keyid == keys.key_id(private) == ed25519.key_id(raw)
    assert pair.keyid == keys.key_id_of_public_pem(pair.public_path.read_bytes())
    assert len(pair.keyid) == 32 and int(pair.keyid, 16) >= 0


def test_existing_key_files_are_never_overwritten(tmp_path: Path) -> None:
    pair = keys.generate_key_pair(tmp_path)
    before = pair.private_path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        keys.generate_key_pair(tmp_path)
    assert pair.private_path.read_bytes() == before


def test_a_lone_public_file_also_blocks_generation(tmp_path: Path) -> None:
    (tmp_path / "member.pub.pem").write_bytes(b"registered already")
    with pytest.raises(KeyFileError):
        keys.generate_key_pair(tmp_path)
    assert not (tmp_path / "member.key.pem").exists()


@pytest.mark.parametrize("content", [b"", b"not a key", b"-----BEGIN PUBLIC KEY-----\nAA==\n"])
def test_unusable_key_files_raise_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match="not an Ed25519 private key"):
        keys.load_private_key(path)
    with pytest.raises(KeyFileError, match="not an Ed25519 public key"):
        keys.load_public_key(path)


def test_a_missing_key_file_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        keys.load_private_key(tmp_path / "absent.pem")


def test_a_private_key_is_not_accepted_as_public(tmp_path: Path) -> None:
    pair = keys.generate_key_pair(tmp_path)
    with pytest.raises(KeyFileError):
        keys.load_public_key(pair.private_path)


def test_a_key_from_an_rfc8032_seed_matches_the_test_vector() -> None:
    key = keys.private_key_from_seed(bytes.fromhex(RFC8032_TEST1_SEED))
    assert ed25519.public_key_raw(key).hex() == RFC8032_TEST1_PUBLIC
    assert ed25519.sign(key, b"").hex() == RFC8032_TEST1_SIG


def test_a_seed_must_be_32_bytes() -> None:
    with pytest.raises(KeyFileError):
        keys.private_key_from_seed(b"\x00" * 31)
