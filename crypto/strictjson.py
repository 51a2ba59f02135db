"""JSON for signed documents: no duplicated keys, no floats, no NaN, bounded nesting.

Python's ``json`` keeps the last of duplicated keys silently, turns decimals into floats and
accepts ``NaN``; each would let two parsers disagree about what a signed document says.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from crypto.errors import StrictJSONError

MAX_INT_DIGITS = 20


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJSONError("duplicate_key", f"key {key[:40]!r} appears more than once")
        out[key] = value
    return out


def _float(_text: str) -> NoReturn:
    raise StrictJSONError(
        "float_not_allowed", "numbers with a fraction or exponent are not allowed; use strings"
    )


def _constant(_text: str) -> NoReturn:
    raise StrictJSONError("non_finite_number", "NaN and Infinity are not JSON")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise StrictJSONError("invalid_json", f"integers have at most {MAX_INT_DIGITS} digits")
    return int(text)


def _depth(text: str) -> int:
    """Deepest bracket nesting outside strings, found in one loop so no recursion limit is hit."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _check_strings(doc: Any) -> None:
    """Refuse lone surrogates (``"\\ud800"``): valid JSON, but no UTF-8 text can hold them."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise StrictJSONError("invalid_utf8", "a string escapes a lone surrogate") from None


def loads_strict(raw: bytes, *, max_depth: int = 32) -> Any:
    """Parse ``raw`` or raise :class:`StrictJSONError` naming the broken rule."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StrictJSONError("invalid_utf8", "the document is not valid UTF-8") from None
    # A document with at most max_depth opening brackets in all cannot nest deeper: skip the
    # character loop (two C-speed counts) for the usual small envelope or payload.
    if text.count("[") + text.count("{") > max_depth and _depth(text) > max_depth:
        raise StrictJSONError("too_deep", f"nesting deeper than {max_depth} levels")
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_float=_float,
            parse_int=_int,
            parse_constant=_constant,
        )
    except json.JSONDecodeError as exc:
        raise StrictJSONError("invalid_json", f"not JSON: {exc.msg} at offset {exc.pos}") from None
    # Valid UTF-8 decodes to no surrogate: one can only come from a \u escape.
    if "\\u" in text:
        _check_strings(doc)
    return doc
