"""crypto.ed25519 against RFC 8032 section 7.1, plus PEM round trips and key ids."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from crypto import ed25519
from crypto.errors import CryptoError

# (secret key, public key, message, signature), all hex, from RFC 8032 section 7.1.
RFC8032_VECTORS = {
    "TEST 1": (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
        "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    "TEST 2": (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    "TEST 3": (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    "TEST SHA(abc)": (
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
}


def _vector(name: str) -> tuple[Ed25519PrivateKey, bytes, bytes, bytes]:
    secret, public, message, signature = RFC8032_VECTORS[name]
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    return key, bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)


@pytest.mark.parametrize("name", sorted(RFC8032_VECTORS))
def test_rfc8032_vector_public_key_signature_and_verification(name: str) -> None:
    key, public, message, signature = _vector(name)
    assert ed25519.public_key_raw(key) == public
    assert ed25519.public_key_raw(key.public_key()) == public
    assert ed25519.sign(key, message) == signature
    assert ed25519.verify(public, signature, message) is True


def test_the_sha_abc_message_is_sha512_of_abc() -> None:
    assert bytes.fromhex(RFC8032_VECTORS["TEST SHA(abc)"][2]) == hashlib.sha512(b"abc").digest()


@pytest.mark.parametrize("name", sorted(RFC8032_VECTORS))
def test_rfc8032_vector_tampered_inputs_do_not_verify(name: str) -> None:
    _, public, message, signature = _vector(name)
    flipped_sig = bytes([signature[0] ^ 1]) + signature[1:]
    assert ed25519.verify(public, flipped_sig, message) is False
    assert ed25519.verify(public, signature, message + b"\x00") is False
    other_public = bytes.fromhex(RFC8032_VECTORS["TEST 1" if name != "TEST 1" else "TEST 2"][1])
    assert ed25519.verify(other_public, signature, message) is False


@pytest.mark.parametrize(
    ("public", "signature"),
    [
        (b"", b""),
        (b"\x00" * 31, b"\x00" * 64),
        (b"\x00" * 33, b"\x00" * 64),
        (bytes.fromhex(RFC8032_VECTORS["TEST 1"][1]), b"\x00" * 63),
        (bytes.fromhex(RFC8032_VECTORS["TEST 1"][1]), b"\x00" * 65),
        (b"\xff" * 32, b"\xff" * 64),
    ],
)
def test_verify_is_false_and_never_raises_on_malformed_inputs(
    public: bytes, signature: bytes
) -> None:
    assert ed25519.verify(public, signature, b"message") is False


def test_private_key_pem_round_trip() -> None:
    key = ed25519.generate_private_key()
    pem = ed25519.private_key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = ed25519.private_key_from_pem(pem)
    assert ed25519.public_key_raw(again) == ed25519.public_key_raw(key)


def test_public_key_pem_round_trip() -> None:
    raw = ed25519.public_key_raw(ed25519.generate_private_key())
    pem = ed25519.public_key_to_pem(raw)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert ed25519.public_key_from_pem(pem) == raw


def test_pem_of_another_algorithm_is_refused() -> None:
    ec_key = generate_private_key(SECP256R1())
    private_pem = ec_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public_pem = ec_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(CryptoError, match="Ed25519"):
        ed25519.private_key_from_pem(private_pem)
    with pytest.raises(CryptoError, match="Ed25519"):
        ed25519.public_key_from_pem(public_pem)


@pytest.mark.parametrize("data", [b"", b"not pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"])
def test_garbage_pem_is_a_crypto_error(data: bytes) -> None:
    with pytest.raises(CryptoError):
        ed25519.private_key_from_pem(data)
    with pytest.raises(CryptoError):
        ed25519.public_key_from_pem(data)


def test_public_key_to_pem_refuses_a_wrong_length() -> None:
    with pytest.raises(CryptoError):
        ed25519.public_key_to_pem(b"\x01" * 31)


def test_key_id_is_the_first_128_bits_of_sha256_of_the_raw_key_in_lowercase_hex() -> None:
    public = bytes.fromhex(RFC8032_VECTORS["TEST 1"][1])
    kid = ed25519.key_id(public)
    assert kid == hashlib.sha256(public).hexdigest()[:32]
    assert len(kid) == 32
    assert kid == kid.lower()
    assert ed25519.key_id(bytes.fromhex(RFC8032_VECTORS["TEST 2"][1])) != kid
