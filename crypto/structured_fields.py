"""The small part of RFC 8941 structured fields that HTTP message signatures need.

Just enough to read ``Signature-Input``, ``Signature`` and ``Content-Digest`` dictionaries and to
write strings; anything outside that subset is a ``ValueError`` (the caller turns it into a
reason code), never a guess.
"""

from __future__ import annotations

import base64
import binascii
import re

ParamValue = int | str

_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*")
_STRING = re.compile(r'"((?:[^"\\]|\\["\\])*)"')
_INTEGER = re.compile(r"-?[0-9]{1,15}")
_BYTES = re.compile(r":([A-Za-z0-9+/]*={0,2}):")
_OWS = " \t"
_OUTSIDE = re.compile(r'["(),]')
_IN_STRING = re.compile(r'["\\]')
_ESCAPED = re.compile(r"\\(.)")


def serialize_string(value: str) -> str:
    """sf-string: printable ASCII in quotes, with ``\\`` and ``"`` escaped."""
    if not (value.isascii() and value.isprintable()):  # printable ASCII: 0x20-0x7E
        raise ValueError("structured-field strings hold printable ASCII only")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_param(value: ParamValue) -> str:
    return str(value) if isinstance(value, int) else serialize_string(value)


def _unescape(text: str) -> str:
    return _ESCAPED.sub(r"\1", text) if "\\" in text else text


def split_dictionary(header: str) -> dict[str, str]:
    """``{key: raw member text}`` of a dictionary, members left unparsed (later keys win)."""
    members: dict[str, str] = {}
    i, n = 0, len(header)
    while True:
        while i < n and header[i] in _OWS:
            i += 1
        key = _KEY.match(header, i)
        if key is None or key.end() >= n or header[key.end()] != "=":
            raise ValueError("not a structured-field dictionary")
        start = j = key.end() + 1
        depth, in_string = 0, False
        # Jump from one character that matters to the next (a signature is ~90 that do not).
        while j < n:
            found = (_IN_STRING if in_string else _OUTSIDE).search(header, j)
            if found is None:
                j = n
                break
            j = found.start()
            ch = header[j]
            if in_string:
                if ch == "\\":
                    j += 1
                else:
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif depth == 0:
                break
            j += 1
        if in_string or depth != 0:
            raise ValueError("unbalanced quotes or parentheses")
        member = header[start:j].strip(_OWS)
        if not member:
            raise ValueError("empty dictionary member")
        members[key.group()] = member
        if j >= n:
            return members
        i = j + 1


def parse_inner_list(text: str) -> tuple[list[str], list[tuple[str, ParamValue]]]:
    """``("a" "b");k=1;s="x"`` to (["a", "b"], [("k", 1), ("s", "x")]); strings only inside."""
    if not text.startswith("("):
        raise ValueError("expected an inner list")
    items: list[str] = []
    pos = 1
    while True:
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos >= len(text):
            raise ValueError("unclosed inner list")
        if text[pos] == ")":
            pos += 1
            break
        if items and text[pos - 1] != " ":
            raise ValueError("inner-list items are separated by spaces")
        item = _STRING.match(text, pos)
        if item is None:
            raise ValueError("inner-list items must be strings without parameters")
        items.append(_unescape(item.group(1)))
        pos = item.end()
    return items, parse_params(text[pos:])


def parse_params(text: str) -> list[tuple[str, ParamValue]]:
    """``;k=1;s="x"`` to pairs in order; only integers and strings, each name once."""
    params: list[tuple[str, ParamValue]] = []
    pos = 0
    while pos < len(text):
        if text[pos] != ";":
            raise ValueError("malformed parameters")
        pos += 1
        while pos < len(text) and text[pos] == " ":
            pos += 1
        key = _KEY.match(text, pos)
        if key is None or key.end() >= len(text) or text[key.end()] != "=":
            raise ValueError("parameters must be name=value")
        pos = key.end() + 1
        value: ParamValue
        if (string := _STRING.match(text, pos)) is not None:
            value, pos = _unescape(string.group(1)), string.end()
        elif (integer := _INTEGER.match(text, pos)) is not None:
            value, pos = int(integer.group()), integer.end()
        else:
            raise ValueError(f"parameter {key.group()} has an unsupported value")
        if any(name == key.group() for name, _ in params):
            raise ValueError(f"parameter {key.group()} is repeated")
        params.append((key.group(), value))
    return params


def parse_byte_sequence(text: str) -> bytes:
    """``:base64:`` without parameters."""
    match = _BYTES.fullmatch(text)
    if match is None:
        raise ValueError("expected a byte sequence :base64:")
    try:
        return base64.b64decode(match.group(1), validate=True)
    except binascii.Error:
        raise ValueError("byte sequence is not base64") from None
