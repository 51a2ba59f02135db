"""registry.paging: a cursor gives back exactly the positions it was made from, and anything
else is refused as a 422 naming the field; page sizes stay within bounds."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.errors import ValidationFailed
from registry.paging import MAX_PAGE, check_limit, decode_cursor, encode_cursor

POSITION = st.integers(min_value=0, max_value=2**63 - 1)


@given(st.lists(POSITION, min_size=1, max_size=3))
def test_a_cursor_gives_back_its_positions(positions: list[int]) -> None:
    cursor = encode_cursor(*positions)
    assert decode_cursor(cursor, len(positions)) == tuple(positions)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor


def test_no_cursor_is_the_start_of_the_list() -> None:
    assert decode_cursor(None) == (0,)
    assert decode_cursor("", 2) == (0, 0)


def test_a_cursor_of_the_earlier_one_position_format_still_reads() -> None:
    """Cursors handed out before positions could be pairs (``p<id>``) stay valid."""
    old = base64.urlsafe_b64encode(b"p42").decode().rstrip("=")
    assert decode_cursor(old) == (42,)


@pytest.mark.parametrize(
    "cursor",
    [
        "42",
        "!!!!",
        base64.urlsafe_b64encode(b"q42").decode(),
        base64.urlsafe_b64encode(b"p-1").decode(),
        base64.urlsafe_b64encode(b"p1.2").decode(),  # two positions where one is expected
        base64.urlsafe_b64encode(b"p" + b"9" * 20).decode(),
        "A" * 100,
    ],
)
def test_anything_else_is_refused_naming_the_field(cursor: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        decode_cursor(cursor, field="after")
    assert [(e.field, e.rule) for e in refused.value.errors] == [("after", "cursor")]


def test_a_pair_is_read_only_as_a_pair() -> None:
    assert decode_cursor(encode_cursor(7, 9), 2) == (7, 9)
    with pytest.raises(ValidationFailed):
        decode_cursor(encode_cursor(7), 2)


def test_page_sizes() -> None:
    assert check_limit(None) == 100
    assert check_limit(1) == 1 and check_limit(MAX_PAGE) == MAX_PAGE
    for bad in (0, -1, MAX_PAGE + 1):
        with pytest.raises(ValidationFailed) as refused:
            check_limit(bad)
        assert [(e.field, e.rule) for e in refused.value.errors] == [("limit", "range")]


@pytest.mark.parametrize("arity", [1, 2, 3])
def test_the_longest_positions_fit_and_a_longer_cursor_is_refused(arity: int) -> None:
    longest = encode_cursor(*[2**63 - 1] * arity)
    assert decode_cursor(longest, arity) == (2**63 - 1,) * arity
    with pytest.raises(ValidationFailed):
        decode_cursor(longest + "A", arity)
