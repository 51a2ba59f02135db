"""crypto.httpsig: RFC 9421 Appendix B.2.6 byte for byte, then the registry's profile."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import ed25519, httpsig
from crypto import structured_fields as sf
from crypto.errors import CryptoError, RequestSignatureError

# --- RFC 9421 Appendix B.1.4 (test-key-ed25519) and B.2.6 ------------------------------------

RFC_PRIVATE_PEM = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----
"""
RFC_PUBLIC_PEM = b"""-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----
"""
# The test-request of Appendix B.2 (its body is {"hello": "world"}).
RFC_URL = "https://example.com/foo?param=Value&Pet=dog"
RFC_HEADERS = {
    "Host": "example.com",
    "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "Content-Type": "application/json",
    "Content-Digest": "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BN"
    "NyealdVLvRwEmTHWXvJwew==:",
    "Content-Length": "18",
}
RFC_COMPONENTS = ("date", "@method", "@path", "@authority", "content-type", "content-length")
RFC_PARAMS = httpsig.SignatureParams(created=1618884473, keyid="test-key-ed25519", alg=None)
# B.2.6 signature base, with the RFC 8792 line wrapping undone.
RFC_BASE = (
    b'"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    b'"@method": POST\n'
    b'"@path": /foo\n'
    b'"@authority": example.com\n'
    b'"content-type": application/json\n'
    b'"content-length": 18\n'
    b'"@signature-params": ("date" "@method" "@path" "@authority" "content-type" '
    b'"content-length");created=1618884473;keyid="test-key-ed25519"'
)
RFC_SIGNATURE_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
RFC_SIGNATURE = (
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpB"
    "KRCw==:"
)


def _rfc_base() -> bytes:
    authority, path, query = httpsig.url_parts(RFC_URL)
    return httpsig.signature_base(
        RFC_COMPONENTS, RFC_PARAMS, method="POST", target_uri=RFC_URL, authority=authority,
        path=path, query=query, headers=RFC_HEADERS,
    )  # fmt: skip


def test_rfc9421_b26_signature_base_is_byte_exact() -> None:
    assert _rfc_base() == RFC_BASE


def test_rfc9421_b26_signature_input_serialisation() -> None:
    assert "sig-b26=" + RFC_PARAMS.serialize(RFC_COMPONENTS) == RFC_SIGNATURE_INPUT


def test_rfc9421_b26_signature_value_is_reproduced_and_verifies() -> None:
    key = ed25519.private_key_from_pem(RFC_PRIVATE_PEM)
    public = ed25519.public_key_from_pem(RFC_PUBLIC_PEM)
    assert ed25519.public_key_raw(key) == public
    signature = ed25519.sign(key, _rfc_base())  # Ed25519 is deterministic
    assert "sig-b26=:" + base64.b64encode(signature).decode() + ":" == RFC_SIGNATURE
    assert ed25519.verify(public, signature, RFC_BASE)


def test_rfc9421_b26_headers_parse_back() -> None:
    components, params = sf.parse_inner_list(sf.split_dictionary(RFC_SIGNATURE_INPUT)["sig-b26"])
    assert tuple(components) == RFC_COMPONENTS
    assert params == [("created", 1618884473), ("keyid", "test-key-ed25519")]
    signature = sf.parse_byte_sequence(sf.split_dictionary(RFC_SIGNATURE)["sig-b26"])
    assert ed25519.verify(ed25519.public_key_from_pem(RFC_PUBLIC_PEM), signature, RFC_BASE)


# --- the signature base builder -------------------------------------------------------------


def _base(components: tuple[str, ...], url: str, headers: dict[str, str] | None = None) -> str:
    authority, path, query = httpsig.url_parts(url)
    return httpsig.signature_base(
        components, httpsig.SignatureParams(created=1, keyid="k", alg=None), method="get",
        target_uri=url, authority=authority, path=path, query=query, headers=headers or {},
    ).decode()  # fmt: skip


def test_derived_components() -> None:
    url = "https://Example.COM:443/a%20b/c?x=1&y=%2F"
    lines = _base(
        ("@method", "@target-uri", "@authority", "@scheme", "@path", "@query", "@request-target"),
        url,
    ).split("\n")
    assert lines == [
        '"@method": GET',
        f'"@target-uri": {url}',
        '"@authority": example.com',
        '"@scheme": https',
        '"@path": /a%20b/c',
        '"@query": ?x=1&y=%2F',
        '"@request-target": /a%20b/c?x=1&y=%2F',
        '"@signature-params": ("@method" "@target-uri" "@authority" "@scheme" "@path" "@query"'
        ' "@request-target");created=1;keyid="k"',
    ]


def test_empty_path_and_query() -> None:
    lines = _base(("@path", "@query", "@request-target"), "http://h.example").split("\n")
    assert lines[:3] == ['"@path": /', '"@query": ?', '"@request-target": /']


@pytest.mark.parametrize(
    ("url", "authority"),
    [
        ("http://h.example:80/", "h.example"),
        ("http://h.example:8080/", "h.example:8080"),
        ("https://h.example:80/", "h.example:80"),
        ("https://H.Example/", "h.example"),
        ("http://[::1]:8000/", "[::1]:8000"),
        ("http://127.0.0.1:8000/v1/reports", "127.0.0.1:8000"),
    ],
)
def test_authority_is_lowercased_with_default_ports_removed(url: str, authority: str) -> None:
    assert httpsig.url_parts(url)[0] == authority


def test_header_components_are_looked_up_case_insensitively_and_trimmed() -> None:
    base = _base(("x-thing",), "http://h/", {"X-Thing": "  value  "})
    assert base.startswith('"x-thing": value\n')


@pytest.mark.parametrize("component", ["@unknown", "X-Thing", "absent"])
def test_components_that_cannot_be_produced_are_a_value_error(component: str) -> None:
    with pytest.raises(ValueError):
        _base((component,), "http://h/", {"X-Thing": "v"})


def test_params_serialise_strings_quoted_and_escaped_integers_bare() -> None:
    params = httpsig.SignatureParams(
        created=1618884473, keyid='k"\\', nonce="n", alg="ed25519", expires=1618884773, tag="t"
    )
    assert params.serialize(["@method"]) == (
        '("@method");created=1618884473;keyid="k\\"\\\\";nonce="n";alg="ed25519"'
        ';expires=1618884773;tag="t"'
    )
    assert (
        httpsig.SignatureParams(created=1, keyid="k", nonce="n").serialize(
            httpsig.REQUIRED_COMPONENTS
        )
        == '("@method" "@target-uri" "content-digest");created=1;keyid="k";nonce="n";alg="ed25519"'
    )


def test_content_digest_is_rfc9530_sha256() -> None:
    # SHA-256 of {"hello": "world"} (RFC 9530 Appendix / RFC 9421 B.2 test-request body).
    assert httpsig.content_digest(b'{"hello": "world"}') == (
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    )


# --- sign_request / verify_request ----------------------------------------------------------

KEY = Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)
PUBLIC = ed25519.public_key_raw(KEY)
KEYID = ed25519.key_id(PUBLIC)
URL = "https://registry.example/v1/reports?dry_run=1"
BODY = b'{"payload":"e30="}'
NOW = 1_700_000_000
NONCE = "nonce-0123456789abcdef"


def _lookup(keyid: str) -> bytes | None:
    return PUBLIC if keyid == KEYID else None


def _signed(
    *,
    method: str = "POST",
    url: str = URL,
    key: Ed25519PrivateKey = KEY,
    label: str = "sig1",
) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    signed = httpsig.sign_request(
        method=method, url=url, headers=headers, body=BODY, key=key, keyid=KEYID,
        created=NOW, nonce=NONCE, label=label,
    )  # fmt: skip
    return {**headers, **signed}


def _verify(
    headers: dict[str, str],
    *,
    method: str = "POST",
    url: str = URL,
    body: bytes = BODY,
    key_lookup: Callable[[str], bytes | None] = _lookup,
    now: int = NOW,
    max_age: int = 300,
    max_skew: int = 30,
) -> httpsig.VerifiedRequest:
    return httpsig.verify_request(
        method=method, url=url, headers=headers, body=body, key_lookup=key_lookup, now=now,
        max_age=max_age, max_skew=max_skew,
    )  # fmt: skip


def _reason(headers: dict[str, str], **overrides: Any) -> str:
    with pytest.raises(RequestSignatureError) as caught:
        _verify(headers, **overrides)
    assert caught.value.detail == str(caught.value)
    return caught.value.reason


def _crafted(
    components: tuple[str, ...],
    params: httpsig.SignatureParams,
    headers: dict[str, str],
    *,
    label: str = "sig1",
    key: Ed25519PrivateKey = KEY,
) -> dict[str, str]:
    """Sign exactly what the test says, bypassing sign_request's profile."""
    authority, path, query = httpsig.url_parts(URL)
    base = httpsig.signature_base(
        components, params, method="POST", target_uri=URL, authority=authority, path=path,
        query=query, headers=headers,
    )  # fmt: skip
    signature = base64.b64encode(ed25519.sign(key, base)).decode()
    return {
        **headers,
        "Signature-Input": f"{label}={params.serialize(components)}",
        "Signature": f"{label}=:{signature}:",
    }


PROFILE_PARAMS = httpsig.SignatureParams(created=NOW, keyid=KEYID, nonce=NONCE)
DIGEST = {"Content-Digest": httpsig.content_digest(BODY)}


def test_sign_request_headers() -> None:
    headers = httpsig.sign_request(
        method="POST", url=URL, headers={}, body=BODY, key=KEY, keyid=KEYID, created=NOW,
        nonce=NONCE,
    )  # fmt: skip
    assert set(headers) == {"Content-Digest", "Signature-Input", "Signature"}
    assert headers["Content-Digest"] == httpsig.content_digest(BODY)
    assert headers["Signature-Input"] == (
        f'sig1=("@method" "@target-uri" "content-digest");created={NOW};keyid="{KEYID}"'
        f';nonce="{NONCE}";alg="ed25519"'
    )
    assert headers["Signature"].startswith("sig1=:") and headers["Signature"].endswith(":")


def test_round_trip() -> None:
    verified = _verify(_signed())
    assert verified == httpsig.VerifiedRequest(keyid=KEYID, created=NOW, nonce=NONCE, label="sig1")


def test_round_trip_with_another_label_and_lowercase_header_names() -> None:
    headers = {k.lower(): v for k, v in _signed(label="bank").items()}
    assert _verify(headers).label == "bank"


def test_round_trip_inside_the_window_edges() -> None:
    assert _verify(_signed(), now=NOW + 300).created == NOW
    assert _verify(_signed(), now=NOW - 30).created == NOW


def test_the_first_label_present_in_both_headers_is_used() -> None:
    headers = _signed()
    headers["Signature-Input"] = (
        'other=("@method");created=1;keyid="x", ' + headers["Signature-Input"]
    )
    headers["Signature"] = headers["Signature"] + ", unrelated=:AAAA:"
    assert _verify(headers).label == "sig1"


def test_the_signers_parameter_order_is_kept() -> None:
    params = dataclasses.replace(PROFILE_PARAMS, order=("nonce", "keyid", "alg", "created"))
    headers = _crafted(httpsig.REQUIRED_COMPONENTS, params, DIGEST)
    assert headers["Signature-Input"].startswith('sig1=("@method" "@target-uri" "content-digest")'
                                                 f';nonce="{NONCE}";keyid=')  # fmt: skip
    assert _verify(headers).keyid == KEYID


def test_extra_covered_components_are_fine() -> None:
    components = ("@method", "@authority", "@target-uri", "content-digest", "content-type")
    headers = _crafted(components, PROFILE_PARAMS, {**DIGEST, "Content-Type": "application/json"})
    assert _verify(headers).keyid == KEYID


def test_alg_may_be_omitted() -> None:
    params = dataclasses.replace(PROFILE_PARAMS, alg=None)
    assert _verify(_crafted(httpsig.REQUIRED_COMPONENTS, params, DIGEST)).keyid == KEYID


def test_content_digest_with_several_algorithms_needs_the_sha256_one_to_match() -> None:
    digest = {"Content-Digest": "sha-512=:AAAA:, " + httpsig.content_digest(BODY)}
    assert _verify(_crafted(httpsig.REQUIRED_COMPONENTS, PROFILE_PARAMS, digest)).nonce == NONCE


def test_request_signature_error_is_a_crypto_error() -> None:
    assert issubclass(RequestSignatureError, CryptoError)
    error = RequestSignatureError("stale", "created is too old")
    assert error.reason == "stale"
    assert error.detail == str(error) == "created is too old"


# --- every failure reason -------------------------------------------------------------------


@pytest.mark.parametrize("drop", ["Signature", "Signature-Input"])
def test_missing_signature(drop: str) -> None:
    headers = _signed()
    del headers[drop]
    assert _reason(headers) == "missing_signature"


def test_missing_signature_when_there_are_no_headers_at_all() -> None:
    assert _reason({}) == "missing_signature"


@pytest.mark.parametrize(
    ("signature_input", "signature"),
    [
        ("garbage", None),
        ("sig1=(", None),
        ('sig1=("@method" "@target-uri" "content-digest")', "other=:AAAA:"),
        (None, "sig1=AAAA"),
        (None, "sig1=:not base64!:"),
        ('sig1=("@method";x=1 "@target-uri" "content-digest");created=1;keyid="k"', None),
        ('sig1=("@method" "@target-uri" "content-digest");created=1;keyid="k";color="red"', None),
        ('sig1=("@method" "@target-uri" "content-digest");created="1";keyid="k"', None),
        ('sig1=("@method" "@target-uri" "content-digest");created=1;keyid=k', None),
        ('sig1=("@method" "@target-uri" "content-digest");keyid="k"', None),
        ('sig1=("@method" "@target-uri" "content-digest");created=1;created=2;keyid="k"', None),
        ('sig1=("@method" "@target-uri" "content-digest");created=1;keyid="k";expires="x"', None),
    ],
)
def test_bad_signature_input(signature_input: str | None, signature: str | None) -> None:
    headers = _signed()
    if signature_input is not None:
        headers["Signature-Input"] = signature_input
    if signature is not None:
        headers["Signature"] = signature
    assert _reason(headers) == "bad_signature_input"


def test_bad_signature_input_for_a_component_listed_twice() -> None:
    components = (*httpsig.REQUIRED_COMPONENTS, "@method")
    assert _reason(_crafted(components, PROFILE_PARAMS, DIGEST)) == "bad_signature_input"


@pytest.mark.parametrize("nonce", ["short", "x" * 129, "has space 0123456789", "nonce+with/slash0"])
def test_bad_signature_input_for_a_malformed_nonce(nonce: str) -> None:
    params = dataclasses.replace(PROFILE_PARAMS, nonce=nonce)
    assert _reason(_crafted(httpsig.REQUIRED_COMPONENTS, params, DIGEST)) == "bad_signature_input"


def test_bad_signature_input_for_an_underived_component() -> None:
    headers = _signed()
    headers["Signature-Input"] = headers["Signature-Input"].replace(
        '"@target-uri"', '"@target-uri" "@status"'
    )
    assert _reason(headers) == "bad_signature_input"


def test_unsupported_algorithm() -> None:
    params = dataclasses.replace(PROFILE_PARAMS, alg="rsa-pss-sha512")
    headers = _crafted(httpsig.REQUIRED_COMPONENTS, params, DIGEST)
    assert _reason(headers) == "unsupported_algorithm"


@pytest.mark.parametrize("left_out", httpsig.REQUIRED_COMPONENTS)
def test_missing_component_in_the_covered_list(left_out: str) -> None:
    components = tuple(c for c in httpsig.REQUIRED_COMPONENTS if c != left_out)
    assert _reason(_crafted(components, PROFILE_PARAMS, DIGEST)) == "missing_component"


def test_missing_component_when_the_content_digest_header_is_absent() -> None:
    headers = _signed()
    del headers["Content-Digest"]
    assert _reason(headers) == "missing_component"


def test_missing_component_when_a_covered_header_is_absent() -> None:
    components = (*httpsig.REQUIRED_COMPONENTS, "x-bank-reference")
    headers = _crafted(components, PROFILE_PARAMS, {**DIGEST, "X-Bank-Reference": "r1"})
    del headers["X-Bank-Reference"]
    assert _reason(headers) == "missing_component"


def test_missing_nonce() -> None:
    params = dataclasses.replace(PROFILE_PARAMS, nonce=None)
    assert _reason(_crafted(httpsig.REQUIRED_COMPONENTS, params, DIGEST)) == "missing_nonce"


def test_stale() -> None:
    assert _reason(_signed(), now=NOW + 301) == "stale"
    assert _reason(_signed(), now=NOW + 61, max_age=60) == "stale"


def test_expired_signature_is_stale() -> None:
    params = dataclasses.replace(PROFILE_PARAMS, expires=NOW + 10)
    headers = _crafted(httpsig.REQUIRED_COMPONENTS, params, DIGEST)
    assert _verify(headers, now=NOW + 9).keyid == KEYID
    assert _reason(headers, now=NOW + 10) == "stale"


def test_created_in_future() -> None:
    assert _reason(_signed(), now=NOW - 31) == "created_in_future"
    assert _reason(_signed(), now=NOW - 6, max_skew=5) == "created_in_future"


def test_digest_mismatch() -> None:
    assert _reason(_signed(), body=BODY + b" ") == "digest_mismatch"


@pytest.mark.parametrize(
    "digest", ["sha-512=:AAAA:", "md5=:AAAA:", "not a dictionary", "sha-256=:AAAA:, ="]
)
def test_bad_digest(digest: str) -> None:
    headers = _crafted(httpsig.REQUIRED_COMPONENTS, PROFILE_PARAMS, {"Content-Digest": digest})
    assert _reason(headers) == "bad_digest"


def test_unknown_key() -> None:
    assert _reason(_signed(), key_lookup=lambda keyid: None) == "unknown_key"


def test_signature_invalid_for_another_key() -> None:
    other = Ed25519PrivateKey.from_private_bytes(b"\x22" * 32)
    assert _reason(_signed(key=other)) == "signature_invalid"


@pytest.mark.parametrize(
    "override",
    [
        {"method": "PUT"},
        {"url": "https://registry.example/v1/reports?dry_run=0"},
        {"url": "http://registry.example/v1/reports?dry_run=1"},
    ],
)
def test_signature_invalid_for_a_changed_request(override: dict[str, Any]) -> None:
    assert _reason(_signed(), **override) == "signature_invalid"


def test_signature_invalid_for_a_changed_signature_parameter() -> None:
    headers = _signed()
    headers["Signature-Input"] = headers["Signature-Input"].replace(NONCE, NONCE[::-1])
    assert _reason(headers) == "signature_invalid"


def test_signature_invalid_for_a_truncated_signature() -> None:
    headers = _signed()
    headers["Signature"] = "sig1=:" + base64.b64encode(b"\x00" * 32).decode() + ":"
    assert _reason(headers) == "signature_invalid"


def test_a_nonce_is_not_remembered_by_the_library() -> None:
    headers = _signed()
    assert _verify(headers) == _verify(headers)  # the caller refuses the replay, not this module
