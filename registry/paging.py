"""Pages of a member's lists: opaque cursors and page sizes, one format for every list.

A cursor names the last item of a page by the positions the list is ordered on (an id, or a
time and an id). It is URL-safe base64 so that nobody builds one by hand, and one that this
registry did not return is refused as a 422 naming the field.
"""

from __future__ import annotations

import base64
import binascii

from registry.errors import FieldError, ValidationFailed

MAX_PAGE = 500
DEFAULT_PAGE = 100
_MAX_DIGITS = 19
"""A position is a non-negative 64-bit integer."""


def _longest_cursor(arity: int) -> int:
    """The length of the longest cursor of ``arity`` positions: "p", the digits and the dots,
    in unpadded base64."""
    return -(-4 * (arity * (_MAX_DIGITS + 1)) // 3)


def encode_cursor(*positions: int) -> str:
    text = "p" + ".".join(str(int(p)) for p in positions)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int = 1, *, field: str = "after") -> tuple[int, ...]:
    """The ``arity`` positions a cursor names; ``None`` (the start of the list) gives zeros."""
    if cursor is None or cursor == "":
        return (0,) * arity
    bad = ValidationFailed(
        "the cursor is not one this endpoint returned",
        errors=[FieldError(field, "cursor", "must be a next_cursor returned by this endpoint")],
    )
    if len(cursor) > _longest_cursor(arity):
        raise bad
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    parts = text[1:].split(".")
    if not text.startswith("p") or len(parts) != arity:
        raise bad
    if not all(part.isdigit() and len(part) <= _MAX_DIGITS for part in parts):
        raise bad
    return tuple(int(part) for part in parts)


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(
            "the page size is out of range",
            errors=[FieldError("limit", "range", f"must be between 1 and {MAX_PAGE}")],
        )
    return limit
