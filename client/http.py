"""Talk to the registry over HTTP: every member request signed (RFC 9421), submits retried safely.

Retrying a submission is safe because the registry is idempotent on the envelope bytes: the same
envelope sent again gets the same receipt (200), never a second record. Each attempt is signed
afresh (new ``created`` and nonce), since the registry consumes a nonce as soon as it verifies
the signature, even when the request then fails.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from typing import TYPE_CHECKING, Any

from client.batch import Outcome
from client.errors import ClientError, RegistryError, TransportError
from client.receipts import RegistryKey, parse_registry_keys
from crypto import httpsig

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DSSE_JSON = "application/json"
USER_AGENT = "registry-client/0.1"
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# A batch answer carries one receipt (~600 bytes) or problem per report, up to 10,000 reports.
MAX_BATCH_RESPONSE_BYTES = 64 * 1024 * 1024
RETRY_AFTER_CAP = 60.0


def _retryable(status: int) -> bool:
    """Overload and server failures; every other error is an answer that will not change."""
    return status == 429 or status >= 500


@dataclass(frozen=True)
class SubmitResult:
    """The registry's answer to a submission: 201 new, 200 the same envelope accepted before."""

    status: int
    receipt: bytes

    @property
    def created(self) -> bool:
        return self.status == 201


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: the signature covers the target URI, and a POST must not move."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


class RegistryClient:
    """A member's signed connection to one registry base URL (the URL the registry signs for)."""

    def __init__(
        self,
        base_url: str,
        key: Ed25519PrivateKey,
        keyid: str,
        *,
        timeout: float = 30,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ClientError(f"the registry URL must be http(s)://host[:port], not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._key = key
        self._keyid = keyid
        self._timeout = timeout
        self._retries = max(0, retries)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect())

    def submit(self, envelope: bytes) -> SubmitResult:
        """POST one envelope (exact bytes) to ``/v1/reports``; returns the receipt bytes."""
        status, body = self._request("POST", "/v1/reports", envelope, signed=True)
        if status not in (200, 201):
            raise RegistryError(status, _problem(status, body))
        return SubmitResult(status=status, receipt=body)

    def submit_batch(self, envelopes: list[bytes]) -> list[Outcome]:
        """POST envelopes (exact bytes each) to ``/v1/reports/batch``; one outcome per envelope.

        Retrying a whole batch is as safe as retrying one report: every envelope already
        accepted is answered 200 with its original receipt.
        """
        try:
            texts = [raw.decode("utf-8") for raw in envelopes]
        except UnicodeDecodeError:
            raise ClientError(
                "an envelope is not UTF-8 text; it cannot be a DSSE envelope"
            ) from None
        body = json.dumps({"envelopes": texts}, separators=(",", ":")).encode()
        status, answer = self._request(
            "POST", "/v1/reports/batch", body, signed=True, limit=MAX_BATCH_RESPONSE_BYTES
        )
        if status != 200:
            raise RegistryError(status, _problem(status, answer))
        return _batch_outcomes(envelopes, answer)

    def receipt(self, report_id: str) -> bytes:
        """The receipt of one of this member's reports, as the registry stored it."""
        path = "/v1/receipts/" + urllib.parse.quote(report_id, safe=":")
        _, body = self._request("GET", path, b"", signed=True)
        return body

    def registry_keys(self) -> list[RegistryKey]:
        """The registry's published keys (anonymous), each checked against its key id."""
        _, body = self._request("GET", "/v1/registry-keys", b"", signed=False)
        try:
            document = json.loads(body)
        except ValueError:
            raise ClientError("the registry keys answer is not JSON") from None
        return parse_registry_keys(document)

    def _request(
        self,
        method: str,
        path: str,
        body: bytes,
        *,
        signed: bool,
        limit: int = MAX_RESPONSE_BYTES,
    ) -> tuple[int, bytes]:
        """Send with retries; return ``(status, body)`` of a 2xx, raise on anything else."""
        url = self.base_url + path
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            request = self._build(method, url, body, signed=signed)
            try:
                with self._opener.open(request, timeout=self._timeout) as response:
                    return response.status, _read(response, limit)
            except urllib.error.HTTPError as exc:
                status, answer = exc.code, _read(exc)
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                exc.close()
                if last or not _retryable(status):
                    raise RegistryError(status, _problem(status, answer)) from None
                self._sleep(self._delay(attempt, retry_after))
            except (OSError, http.client.HTTPException) as exc:
                if last:
                    reason = getattr(exc, "reason", exc)
                    raise TransportError(
                        f"no answer from {url} after {attempt + 1} attempts: {reason}"
                    ) from None
                self._sleep(self._delay(attempt, None))
        raise AssertionError("unreachable")  # pragma: no cover

    def _build(self, method: str, url: str, body: bytes, *, signed: bool) -> urllib.request.Request:
        headers = {
            "Accept": "application/json, application/problem+json",
            "User-Agent": USER_AGENT,
        }
        if method == "POST":
            headers["Content-Type"] = DSSE_JSON
        if signed:
            headers.update(
                httpsig.sign_request(
                    method=method,
                    url=url,
                    headers=headers,
                    body=body,
                    key=self._key,
                    keyid=self._keyid,
                    created=int(self._clock()),
                    nonce=secrets.token_urlsafe(24),
                )
            )
        data = body if method == "POST" else None
        return urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Exponential back-off with jitter, or the server's ``Retry-After`` seconds (capped)."""
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after.strip()), RETRY_AFTER_CAP)
        base: float = min(self._max_backoff, self._backoff * (2**attempt))
        return base * (0.5 + secrets.randbelow(1000) / 2000)


def _read(response: Any, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    data: bytes = response.read(limit + 1)
    if len(data) > limit:
        raise ClientError("the registry's answer is larger than the client accepts")
    # NOTE: http.client's read(n) returns what it has when the connection closes early (a
    # registry killed mid-answer), without complaint. A short body is a lost answer, retried:
    # taking it would record an empty or cut receipt as the registry's acknowledgement.
    declared = response.headers.get("Content-Length") if response.headers else None
    if declared is not None and declared.strip().isdigit() and len(data) != int(declared):
        raise http.client.IncompleteRead(data, int(declared) - len(data))
    return data


def _problem(status: int, body: bytes) -> dict[str, Any]:
    """The problem details of an error answer, or a stand-in when the body is not one."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        return document
    text = body.decode("utf-8", "replace").strip()[:300]
    return {"status": status, "detail": text or f"HTTP {status} without problem details"}


def _batch_outcomes(envelopes: list[bytes], answer: bytes) -> list[Outcome]:
    """Pair each envelope with its result; a receipt is kept as the registry's exact bytes.

    The registry signs receipts as compact JSON with sorted keys, so serialising the object
    that way gives back those bytes (checked: the receipt is verified against them later).
    """
    try:
        document = json.loads(answer)
        results = document["results"]
    except (ValueError, KeyError, TypeError):
        raise ClientError("the registry's batch answer is not the expected JSON") from None
    if not isinstance(results, list) or len(results) != len(envelopes):
        raise ClientError("the registry's batch answer does not have one result per envelope")
    outcomes = []
    for raw, result in zip(envelopes, results, strict=True):
        digest = hashlib.sha256(raw).hexdigest()
        status = int(result.get("status", 0))
        if status in (200, 201) and isinstance(result.get("receipt"), dict):
            receipt = json.dumps(result["receipt"], sort_keys=True, separators=(",", ":"))
            outcomes.append(
                Outcome(
                    digest,
                    status,
                    report_id=str(result.get("report_id", "")),
                    receipt=receipt.encode(),
                )
            )
            continue
        problem = result.get("problem") if isinstance(result.get("problem"), dict) else {}
        outcomes.append(
            Outcome(
                digest,
                status or 500,
                code=str(problem.get("code", f"http_{status}")),
                detail=str(problem.get("detail", "")),
            )
        )
    return outcomes
