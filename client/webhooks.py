"""Verify an early-warning webhook request from the registry, on the member's side.

The registry signs each delivery with its Ed25519 key (RFC 9421, the same profile members use
towards it). Verify before trusting the body, then dedupe on ``event_id``: delivery is at least
once, and a redelivery carries the same body under a fresh signature.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from client.errors import ClientError
from client.receipts import RegistryKey
from crypto import httpsig, strictjson
from crypto.errors import RequestSignatureError, StrictJSONError


class WebhookInvalid(ClientError):
    """A webhook request failed verification; ``reason`` names the check (stable)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


def verify_alert(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    registry_keys: Iterable[RegistryKey] | Mapping[str, bytes],
    now: int | None = None,
    max_age: int = 300,
    max_skew: int = 30,
) -> dict[str, Any]:
    """Check the registry's signature over the request and return the alert document.

    ``url`` is the webhook URL exactly as registered (the registry signs that URI); ``headers``
    the request's headers in any case; ``body`` the exact bytes received.
    """
    trusted = (
        dict(registry_keys)
        if isinstance(registry_keys, Mapping)
        else {key.keyid: key.public_key for key in registry_keys}
    )
    try:
        httpsig.verify_request(
            method=method,
            url=url,
            headers=headers,
            body=body,
            key_lookup=trusted.get,
            now=int(time.time()) if now is None else now,
            max_age=max_age,
            max_skew=max_skew,
        )
    except RequestSignatureError as exc:
        raise WebhookInvalid(exc.reason, exc.detail) from None
    try:
        document = strictjson.loads_strict(body)
    except StrictJSONError as exc:
        raise WebhookInvalid("body_malformed", exc.detail) from None
    if not isinstance(document, dict) or not isinstance(document.get("event_id"), str):
        raise WebhookInvalid("body_malformed", "the body is not an alert document")
    return document
