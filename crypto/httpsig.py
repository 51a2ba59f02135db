"""RFC 9421 HTTP Message Signatures, Ed25519 only, with the registry's required profile.

The builder is generic enough to reproduce RFC 9421 Appendix B.2.6 byte for byte; the profile
(:data:`REQUIRED_COMPONENTS`, created + keyid + nonce, a short window, Content-Digest checked
against the exact body) is what :func:`verify_request` enforces.

This module checks what a signature covers and when it was made. It does NOT remember nonces:
the caller must store each accepted ``(keyid, nonce)`` for the replay window and refuse repeats.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import ed25519
from crypto import structured_fields as sf
from crypto.errors import RequestSignatureError

REQUIRED_COMPONENTS = ("@method", "@target-uri", "content-digest")
ALGORITHM = "ed25519"
PARAM_NAMES = ("created", "keyid", "nonce", "alg", "expires", "tag")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def content_digest(body: bytes) -> str:
    """RFC 9530 Content-Digest with SHA-256: ties the signature to the exact body bytes."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode('ascii')}:"


@dataclass(frozen=True)
class SignatureParams:
    """Signature parameters of RFC 9421 section 2.3.

    ``order`` is the order in which they are serialised; a verifier keeps the signer's order,
    since the ``@signature-params`` line it rebuilds must match what was signed byte for byte.
    """

    created: int
    keyid: str
    nonce: str | None = None
    alg: str | None = ALGORITHM
    expires: int | None = None
    tag: str | None = None
    order: tuple[str, ...] = field(default=PARAM_NAMES)

    def items(self) -> list[tuple[str, sf.ParamValue]]:
        """The parameters that are set, in serialisation order."""
        out: list[tuple[str, sf.ParamValue]] = []
        for name in self.order:
            value = getattr(self, name)
            if value is not None:
                out.append((name, value))
        return out

    def serialize(self, components: Sequence[str]) -> str:
        """The inner list, e.g. ``("@method" "@target-uri");created=1;keyid="k"``."""
        inner = " ".join(sf.serialize_string(c) for c in components)
        params = "".join(f";{name}={sf.serialize_param(value)}" for name, value in self.items())
        return f"({inner}){params}"


def signature_base(
    components: Sequence[str],
    params: SignatureParams,
    *,
    method: str,
    target_uri: str,
    authority: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
) -> bytes:
    """The exact bytes that are signed (RFC 9421 section 2.5), one line per component.

    Raises ValueError for a component it cannot produce; verify_request maps that to a reason.
    """
    lower = {name.lower(): value for name, value in headers.items()}
    derived = {
        "@method": method.upper(),
        "@target-uri": target_uri,
        "@authority": authority,
        "@scheme": urlsplit(target_uri).scheme.lower(),
        "@path": path or "/",
        "@query": f"?{query}",
        "@request-target": (path or "/") + (f"?{query}" if query else ""),
    }
    lines = []
    for name in components:
        if name.startswith("@"):
            if name not in derived:
                raise ValueError(f"unsupported derived component {name}")
            value = derived[name]
        elif name != name.lower():
            raise ValueError("header component names are lowercase")
        elif name not in lower:
            raise ValueError(f"covered header {name} is not in the request")
        else:
            value = lower[name].strip(" \t")
        if "\n" in value or "\r" in value:
            raise ValueError(f"component {name} holds a line break")
        lines.append(f"{sf.serialize_string(name)}: {value}")
    lines.append(f'"@signature-params": {params.serialize(components)}')
    return "\n".join(lines).encode("utf-8")


def url_parts(url: str) -> tuple[str, str, str]:
    """(@authority, path, query) of a full URL: host lowercased, default port dropped."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return host, parts.path, parts.query


def sign_request(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    key: Ed25519PrivateKey,
    keyid: str,
    created: int,
    nonce: str,
    label: str = "sig1",
) -> dict[str, str]:
    """The headers to add to a request: Content-Digest, Signature-Input, Signature."""
    digest = content_digest(body)
    merged = {**{k.lower(): v for k, v in headers.items()}, "content-digest": digest}
    params = SignatureParams(created=created, keyid=keyid, nonce=nonce, alg=ALGORITHM)
    authority, path, query = url_parts(url)
    base = signature_base(
        REQUIRED_COMPONENTS, params, method=method, target_uri=url, authority=authority,
        path=path, query=query, headers=merged,
    )  # fmt: skip
    signature = base64.b64encode(ed25519.sign(key, base)).decode("ascii")
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{label}={params.serialize(REQUIRED_COMPONENTS)}",
        "Signature": f"{label}=:{signature}:",
    }


@dataclass(frozen=True)
class VerifiedRequest:
    keyid: str
    created: int
    nonce: str
    label: str


def _fail(reason: str, detail: str) -> RequestSignatureError:
    return RequestSignatureError(reason, detail)


def _params_from(pairs: list[tuple[str, sf.ParamValue]]) -> SignatureParams:
    values = dict(pairs)
    unknown = set(values) - set(PARAM_NAMES)
    if unknown:
        raise _fail("bad_signature_input", f"unknown signature parameter {sorted(unknown)[0]}")
    created, keyid = values.get("created"), values.get("keyid")
    if not isinstance(created, int) or not isinstance(keyid, str):
        raise _fail("bad_signature_input", "created (integer) and keyid (string) are required")
    strings: dict[str, str | None] = {}
    for name in ("nonce", "alg", "tag"):
        value = values.get(name)
        if value is not None and not isinstance(value, str):
            raise _fail("bad_signature_input", f"signature parameter {name} must be a string")
        strings[name] = value
    expires = values.get("expires")
    if expires is not None and not isinstance(expires, int):
        raise _fail("bad_signature_input", "signature parameter expires must be an integer")
    return SignatureParams(
        created=created, keyid=keyid, nonce=strings["nonce"], alg=strings["alg"],
        expires=expires, tag=strings["tag"], order=tuple(name for name, _ in pairs),
    )  # fmt: skip


def _read_signature(headers: Mapping[str, str]) -> tuple[str, list[str], SignatureParams, bytes]:
    """(label, components, params, signature) of the first label in both headers."""
    if "signature-input" not in headers or "signature" not in headers:
        raise _fail("missing_signature", "Signature-Input and Signature headers are required")
    try:
        inputs = sf.split_dictionary(headers["signature-input"])
        signatures = sf.split_dictionary(headers["signature"])
    except ValueError as exc:
        raise _fail("bad_signature_input", f"malformed signature header: {exc}") from None
    label = next((name for name in inputs if name in signatures), None)
    if label is None:
        raise _fail("bad_signature_input", "no label appears in both Signature-Input and Signature")
    try:
        components, pairs = sf.parse_inner_list(inputs[label])
        signature = sf.parse_byte_sequence(signatures[label])
    except ValueError as exc:
        raise _fail("bad_signature_input", f"malformed signature {label}: {exc}") from None
    return label, components, _params_from(pairs), signature


def _check_profile(components: list[str], params: SignatureParams) -> str:
    """The registry's profile; returns the nonce, which the profile makes mandatory."""
    if len(set(components)) != len(components):
        raise _fail("bad_signature_input", "a component is listed twice")
    if any(c not in components for c in REQUIRED_COMPONENTS):
        raise _fail(
            "missing_component", f"the signature must cover {', '.join(REQUIRED_COMPONENTS)}"
        )
    if params.alg is not None and params.alg != ALGORITHM:
        raise _fail("unsupported_algorithm", f"only alg={ALGORITHM} is accepted")
    if params.nonce is None:
        raise _fail("missing_nonce", "a nonce parameter is required")
    if not _NONCE.fullmatch(params.nonce):
        raise _fail("bad_signature_input", "nonce must be 16-128 characters of A-Z a-z 0-9 _ -")
    return params.nonce


def _check_time(params: SignatureParams, now: int, max_age: int, max_skew: int) -> None:
    if params.created < now - max_age:
        raise _fail("stale", f"created is more than {max_age} seconds old")
    if params.created > now + max_skew:
        raise _fail("created_in_future", f"created is more than {max_skew} seconds ahead")
    if params.expires is not None and params.expires <= now:
        raise _fail("stale", "the signature has expired")


def _check_digest(headers: Mapping[str, str], body: bytes) -> None:
    header = headers.get("content-digest")
    if header is None:
        raise _fail("missing_component", "the Content-Digest header is required")
    try:
        digests = sf.split_dictionary(header)
    except ValueError:
        raise _fail("bad_digest", "Content-Digest is not a structured-field dictionary") from None
    if "sha-256" not in digests:
        raise _fail("bad_digest", "Content-Digest must include sha-256")
    if f"sha-256={digests['sha-256']}" != content_digest(body):
        raise _fail("digest_mismatch", "Content-Digest does not match the body")


def verify_request(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    key_lookup: Callable[[str], bytes | None],
    now: int,
    max_age: int = 300,
    max_skew: int = 30,
) -> VerifiedRequest:
    """Check a request's signature under the registry's profile or raise RequestSignatureError.

    ``headers`` may use any case. Nonces are not remembered here: store the returned
    ``(keyid, nonce)`` for ``max_age + max_skew`` seconds and refuse a second use.
    """
    lower = {name.lower(): value for name, value in headers.items()}
    label, components, params, signature = _read_signature(lower)
    nonce = _check_profile(components, params)
    _check_time(params, now, max_age, max_skew)
    _check_digest(lower, body)
    public = key_lookup(params.keyid)
    if public is None:
        raise _fail("unknown_key", "the keyid is not a registered key")
    absent = [c for c in components if not c.startswith("@") and c not in lower]
    if absent:
        raise _fail("missing_component", f"covered header {absent[0][:40]} is not in the request")
    try:
        authority, path, query = url_parts(url)
        base = signature_base(
            components, params, method=method, target_uri=url, authority=authority,
            path=path, query=query, headers=lower,
        )  # fmt: skip
    except ValueError as exc:
        raise _fail("bad_signature_input", f"cannot build the signature base: {exc}") from None
    if not ed25519.verify(public, signature, base):
        raise _fail("signature_invalid", "the signature does not verify")
    return VerifiedRequest(keyid=params.keyid, created=params.created, nonce=nonce, label=label)
