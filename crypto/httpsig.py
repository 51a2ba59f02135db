"""RFC 9421 HTTP Message Signatures, Ed25519 only, with the registry's required profile.

The library checks what a signature covers and when it was made. It does not remember nonces:
the caller must store each accepted ``(keyid, nonce)`` for the replay window.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import ed25519
from crypto.errors import RequestSignatureError

REQUIRED_COMPONENTS = ("@method", "@target-uri", "content-digest")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_TOKEN = re.compile(r"[a-z*][a-z0-9_.*-]*")
_DEFAULT_PORTS = {"http": 80, "https": 443}

ParamValue = int | str


def content_digest(body: bytes) -> str:
    """RFC 9530 Content-Digest with SHA-256."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


def _sf_string(value: str) -> str:
    if not value.isascii() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("structured-field strings are printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sf_param(value: ParamValue) -> str:
    return str(value) if isinstance(value, int) else _sf_string(value)


@dataclass(frozen=True)
class SignatureParams:
    """Signature parameters, serialised in the order they were given (or created first)."""

    created: int
    keyid: str
    nonce: str | None = None
    alg: str | None = "ed25519"
    expires: int | None = None
    tag: str | None = None
    order: tuple[str, ...] = field(default=("created", "keyid", "nonce", "alg", "expires", "tag"))

    def items(self) -> list[tuple[str, ParamValue]]:
        out: list[tuple[str, ParamValue]] = []
        for name in self.order:
            value = getattr(self, name)
            if value is not None:
                out.append((name, value))
        return out

    def serialize(self, components: Sequence[str]) -> str:
        inner = " ".join(_sf_string(c) for c in components)
        params = "".join(f";{name}={_sf_param(value)}" for name, value in self.items())
        return f"({inner}){params}"


def _authority(netloc_host: str | None, port: int | None, scheme: str) -> str:
    host = (netloc_host or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        return f"{host}:{port}"
    return host


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
    """The exact bytes that are signed (RFC 9421 section 2.5)."""
    lower = {k.lower(): v for k, v in headers.items()}
    scheme = urlsplit(target_uri).scheme.lower()
    derived = {
        "@method": method.upper(),
        "@target-uri": target_uri,
        "@authority": authority,
        "@scheme": scheme,
        "@path": path or "/",
        "@query": f"?{query}",
        "@request-target": (path or "/") + (f"?{query}" if query else ""),
    }
    lines = []
    for name in components:
        if name.startswith("@"):
            if name not in derived:
                raise RequestSignatureError("bad_signature_input", f"unsupported component {name}")
            value = derived[name]
        else:
            if name not in lower:
                raise RequestSignatureError(
                    "missing_component", f"covered header {name} is not in the request"
                )
            value = lower[name].strip()
        lines.append(f"{_sf_string(name)}: {value}")
    lines.append(f'"@signature-params": {params.serialize(components)}')
    return "\n".join(lines).encode("utf-8")


def _url_parts(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    return _authority(parts.hostname, parts.port, parts.scheme.lower()), parts.path, parts.query


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
    """Headers to add to a request: Content-Digest, Signature-Input, Signature."""
    digest = content_digest(body)
    merged = {**{k.lower(): v for k, v in headers.items()}, "content-digest": digest}
    params = SignatureParams(created=created, keyid=keyid, nonce=nonce, alg="ed25519")
    authority, path, query = _url_parts(url)
    base = signature_base(
        REQUIRED_COMPONENTS, params, method=method, target_uri=url, authority=authority,
        path=path, query=query, headers=merged,
    )  # fmt: skip
    signature = base64.b64encode(ed25519.sign(key, base)).decode()
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


_MEMBER = re.compile(r"\s*([a-z*][a-z0-9_.*-]*)=")
_INNER = re.compile(r'\(((?:\s*"(?:[^"\\]|\\.)*")*)\s*\)')
_ITEM_STR = re.compile(r'"((?:[^"\\]|\\.)*)"')
_PARAM = re.compile(
    r';\s*([a-z*][a-z0-9_.*-]*)(?:=(-?\d{1,15}|"(?:[^"\\]|\\.)*"|[A-Za-z*][^;,\s]*))?'
)
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")


def _split_members(header: str) -> dict[str, str]:
    """Split an RFC 8941 dictionary into ``{label: raw member value}``."""
    members: dict[str, str] = {}
    i, n = 0, len(header)
    while i < n:
        match = _MEMBER.match(header, i)
        if not match:
            raise ValueError("not a structured-field dictionary")
        start = j = match.end()
        depth, in_string = 0, False
        while j < n:
            ch = header[j]
            if in_string:
                if ch == "\\":
                    j += 1
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == "," and depth == 0:
                break
            j += 1
        members[match.group(1)] = header[start:j].strip()
        i = j + 1
    return members


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _parse_input(value: str) -> tuple[list[str], SignatureParams]:
    inner = _INNER.match(value)
    if not inner:
        raise ValueError("Signature-Input member must be an inner list")
    components = [_unescape(m) for m in _ITEM_STR.findall(inner.group(1))]
    rest = value[inner.end() :]
    params: dict[str, ParamValue] = {}
    order: list[str] = []
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m:
            raise ValueError("malformed signature parameters")
        name, raw = m.group(1), m.group(2)
        if raw is None or name in params:
            raise ValueError("malformed or repeated signature parameter")
        params[name] = _unescape(raw[1:-1]) if raw.startswith('"') else int(raw)
        order.append(name)
        pos = m.end()
    unknown = set(params) - {"created", "keyid", "nonce", "alg", "expires", "tag"}
    if unknown:
        raise ValueError(f"unknown signature parameter {sorted(unknown)[0]}")
    created, keyid = params.get("created"), params.get("keyid")
    if not isinstance(created, int) or not isinstance(keyid, str):
        raise RequestSignatureError("bad_signature_input", "created and keyid are required")
    for name, kind in (("nonce", str), ("alg", str), ("tag", str), ("expires", int)):
        if name in params and not isinstance(params[name], kind):
            raise ValueError(f"signature parameter {name} has the wrong type")
    return components, SignatureParams(
        created=created, keyid=keyid,
        nonce=params.get("nonce"),  # type: ignore[arg-type]
        alg=params.get("alg"),  # type: ignore[arg-type]
        expires=params.get("expires"),  # type: ignore[arg-type]
        tag=params.get("tag"),  # type: ignore[arg-type]
        order=tuple(order),
    )  # fmt: skip


def _check_digest(headers: Mapping[str, str], body: bytes) -> None:
    header = headers.get("content-digest")
    if header is None:
        raise RequestSignatureError("missing_component", "Content-Digest header is required")
    try:
        digests = _split_members(header)
    except ValueError:
        raise RequestSignatureError("bad_digest", "Content-Digest is malformed") from None
    if "sha-256" not in digests:
        raise RequestSignatureError("bad_digest", "Content-Digest must include sha-256")
    if f"sha-256={digests['sha-256']}" != content_digest(body):
        raise RequestSignatureError("digest_mismatch", "Content-Digest does not match the body")


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
    """Check the request's signature under the registry's profile, or raise with a reason."""
    lower = {k.lower(): v for k, v in headers.items()}
    if "signature-input" not in lower or "signature" not in lower:
        raise RequestSignatureError(
            "missing_signature", "Signature-Input and Signature headers are required"
        )
    try:
        inputs = _split_members(lower["signature-input"])
        signatures = _split_members(lower["signature"])
    except ValueError:
        raise RequestSignatureError("bad_signature_input", "malformed signature headers") from None
    label = next((name for name in inputs if name in signatures), None)
    if label is None:
        raise RequestSignatureError("bad_signature_input", "no label in both signature headers")
    try:
        components, params = _parse_input(inputs[label])
    except ValueError as exc:
        raise RequestSignatureError("bad_signature_input", str(exc)) from None
    sig_match = _BYTES.fullmatch(signatures[label])
    if not sig_match:
        raise RequestSignatureError("bad_signature_input", "Signature must be a byte sequence")
    missing = [c for c in REQUIRED_COMPONENTS if c not in components]
    if missing:
        raise RequestSignatureError(
            "missing_component", f"the signature must cover {', '.join(REQUIRED_COMPONENTS)}"
        )
    if len(set(components)) != len(components):
        raise RequestSignatureError("bad_signature_input", "a component is listed twice")
    if params.alg is not None and params.alg != "ed25519":
        raise RequestSignatureError("unsupported_algorithm", "only alg=ed25519 is accepted")
    if params.nonce is None:
        raise RequestSignatureError("missing_nonce", "a nonce parameter is required")
    if not _NONCE.fullmatch(params.nonce):
        raise RequestSignatureError(
            "bad_signature_input", "nonce must be 16-128 characters of A-Z a-z 0-9 _ -"
        )
    if params.created < now - max_age:
        raise RequestSignatureError("stale", f"created is older than {max_age} seconds")
    if params.created > now + max_skew:
        raise RequestSignatureError("created_in_future", "created is in the future")
    if params.expires is not None and params.expires <= now:
        raise RequestSignatureError("stale", "the signature has expired")
    _check_digest(lower, body)
    public = key_lookup(params.keyid)
    if public is None:
        raise RequestSignatureError("unknown_key", "the keyid is not registered")
    authority, path, query = _url_parts(url)
    base = signature_base(
        components, params, method=method, target_uri=url, authority=authority,
        path=path, query=query, headers=lower,
    )  # fmt: skip
    try:
        signature = base64.b64decode(sig_match.group(1), validate=True)
    except binascii.Error:
        raise RequestSignatureError("bad_signature_input", "Signature is not base64") from None
    if not ed25519.verify(public, signature, base):
        raise RequestSignatureError("signature_invalid", "the signature does not verify")
    return VerifiedRequest(keyid=params.keyid, created=params.created, nonce=params.nonce,
                           label=label)  # fmt: skip
