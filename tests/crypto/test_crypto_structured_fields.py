"""crypto.structured_fields: the RFC 8941 subset, and refusal of everything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import structured_fields as sf


def test_split_dictionary_keeps_inner_lists_and_strings_whole() -> None:
    header = 'a=("x, y" "z");k="v,w", b=:AAAA:,c=1'
    assert sf.split_dictionary(header) == {
        "a": '("x, y" "z");k="v,w"',
        "b": ":AAAA:",
        "c": "1",
    }


@pytest.mark.parametrize("header", ["", "A=1", "a", "a=", "a=1,", 'a="open', "a=(1", "a=1,,b=2"])
def test_split_dictionary_refuses_malformed_headers(header: str) -> None:
    with pytest.raises(ValueError):
        sf.split_dictionary(header)


def test_parse_inner_list_with_escapes_and_params() -> None:
    items, params = sf.parse_inner_list('("a\\"b" "c\\\\");n=-5;s="q\\"";z=0')
    assert items == ['a"b', "c\\"]
    assert params == [("n", -5), ("s", 'q"'), ("z", 0)]


@pytest.mark.parametrize(
    "text",
    [
        '"a"',
        '("a"',
        '("a""b")',
        '("a";p=1)',
        "(a)",
        '("a");p',
        '("a");p=1.5',
        '("a");p=tok',
        '("a");p=1234567890123456',
        '("a");p=1;p=2',
        '("a") ;p=1',
    ],
)
def test_parse_inner_list_refuses_what_it_does_not_support(text: str) -> None:
    with pytest.raises(ValueError):
        sf.parse_inner_list(text)


def test_serialize_string_escapes_and_refuses_non_printable() -> None:
    assert sf.serialize_string('a"b\\c') == '"a\\"b\\\\c"'
    for bad in ("\u00e9", "\n", "\x7f"):
        with pytest.raises(ValueError):
            sf.serialize_string(bad)


@given(st.text(alphabet=st.characters(max_codepoint=0x2FF)))
def test_serialize_string_takes_exactly_printable_ascii(value: str) -> None:
    """The check is a pair of string methods; this pins it to RFC 8941's range, 0x20-0x7E."""
    if all(0x20 <= ord(c) <= 0x7E for c in value):
        assert sf.parse_params(f";k={sf.serialize_string(value)}") == [("k", value)]
    else:
        with pytest.raises(ValueError):
            sf.serialize_string(value)


def test_byte_sequence() -> None:
    assert sf.parse_byte_sequence(":AAE=:") == b"\x00\x01"
    for bad in ("AAE=", ":AAE=", ":A A:", ":AAE=:;p=1", ":A-E=:"):
        with pytest.raises(ValueError):
            sf.parse_byte_sequence(bad)
