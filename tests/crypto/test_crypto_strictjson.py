"""crypto.strictjson: each rule is refused with its own code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.errors import CryptoError, StrictJSONError
from crypto.strictjson import loads_strict


def _rule(raw: bytes, **kwargs: int) -> str:
    with pytest.raises(StrictJSONError) as caught:
        loads_strict(raw, **kwargs)
    return caught.value.rule


def test_accepts_ordinary_json() -> None:
    raw = b'{"a": [1, -2, "3.50", true, false, null, {"b": "\\u00e9"}], "c": 12345678901234567890}'
    assert loads_strict(raw) == {
        "a": [1, -2, "3.50", True, False, None, {"b": "\u00e9"}],
        "c": 12345678901234567890,
    }


@pytest.mark.parametrize("raw", [b"\xff", b'{"a": "\xc3"}', b'"\xed\xa0\x80"'])
def test_invalid_utf8(raw: bytes) -> None:
    assert _rule(raw) == "invalid_utf8"


@pytest.mark.parametrize("raw", [b'"\\ud800"', b'{"\\udc00": 1}', b'["\\ud83d x"]'])
def test_lone_surrogate_escapes_are_refused(raw: bytes) -> None:
    assert _rule(raw) == "invalid_utf8"


def test_a_surrogate_pair_is_fine() -> None:
    assert loads_strict(b'"\\ud83d\\ude00"') == "\U0001f600"


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"{'a': 1}", b"[1,]", b"01", b'{"a" 1}', b"\xef\xbb\xbf{}", b"{} {}"]
)
def test_invalid_json(raw: bytes) -> None:
    assert _rule(raw) == "invalid_json"


def test_duplicate_key_is_named() -> None:
    with pytest.raises(StrictJSONError) as caught:
        loads_strict(b'{"x": {"amount": "1", "amount": "2"}}')
    assert caught.value.rule == "duplicate_key"
    assert "amount" in caught.value.detail


@pytest.mark.parametrize("raw", [b"1.5", b"[1.0]", b'{"a": 1e3}', b"-0.0", b"1E-2"])
def test_float_not_allowed(raw: bytes) -> None:
    assert _rule(raw) == "float_not_allowed"


@pytest.mark.parametrize("raw", [b"NaN", b"[Infinity]", b'{"a": -Infinity}'])
def test_non_finite_number(raw: bytes) -> None:
    assert _rule(raw) == "non_finite_number"


def test_integers_have_at_most_20_digits() -> None:
    assert loads_strict(b"-99999999999999999999") == -99999999999999999999
    assert _rule(b"123456789012345678901") == "invalid_json"
    assert _rule(b"[-123456789012345678901]") == "invalid_json"


def test_depth_limit() -> None:
    assert loads_strict(b"[" * 32 + b"]" * 32) is not None
    assert _rule(b"[" * 33 + b"]" * 33) == "too_deep"
    assert _rule(b'{"a":' * 3 + b"1" + b"}" * 3, max_depth=2) == "too_deep"


def test_depth_is_checked_before_parsing_so_huge_nesting_is_no_recursion_error() -> None:
    assert _rule(b"[" * 200_000) == "too_deep"
    assert _rule(b"[" * 200_000 + b"]" * 200_000) == "too_deep"


def test_brackets_inside_strings_do_not_count() -> None:
    assert loads_strict(b'["[[[[[[[[[[", "\\"[[[["]', max_depth=1) == ["[[[[[[[[[[", '"[[[[']


def test_strict_json_error_is_a_crypto_error_with_rule_and_detail() -> None:
    with pytest.raises(CryptoError) as caught:
        loads_strict(b"1.5")
    assert isinstance(caught.value, StrictJSONError)
    assert caught.value.detail == str(caught.value)


_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]))
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**19), 10**19) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@given(_json, st.booleans())
def test_property_json_within_the_rules_round_trips(value: object, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    assert loads_strict(raw, max_depth=64) == value


def _encodable(doc: Any) -> bool:
    if isinstance(doc, dict):
        strings = [*doc, *doc.values()]
    else:
        strings = [doc] if isinstance(doc, str) else doc
    try:
        for text in strings:
            text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@given(
    st.one_of(
        st.text(alphabet=st.characters(categories=["Cs", "Ll", "Lo", "So"]), max_size=6),
        st.lists(st.text(alphabet=st.characters(categories=["Cs", "Lo"]), max_size=4), max_size=3),
        st.dictionaries(
            st.text(alphabet=st.characters(categories=["Cs", "Lu"]), max_size=3),
            st.text(max_size=3),
            max_size=3,
        ),
    )
)
def test_a_document_is_refused_exactly_when_an_escape_leaves_a_lone_surrogate(doc: Any) -> None:
    """json.dumps escapes every non-ASCII character (\\uXXXX); a pair of escapes that makes a
    surrogate pair is one character again, a lone one cannot be UTF-8."""
    raw = json.dumps(doc).encode()
    if _encodable(json.loads(raw)):
        loads_strict(raw)
    else:
        assert _rule(raw) == "invalid_utf8"
