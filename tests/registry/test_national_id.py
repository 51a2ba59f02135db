import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry import national_id as nid

# A published example of the standard: 11010519491231002X (check character X).
KNOWN_VALID = ["11010519491231002X", "440524188001010014", "110101199003070011"]


@pytest.mark.parametrize("value", KNOWN_VALID)
def test_known_numbers_are_valid(value: str) -> None:
    assert nid.validate(value) == value


def test_lower_case_x_and_spaces_are_normalised() -> None:
    assert nid.validate(" 11010519491231002x ") == "11010519491231002X"


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("1101051949123100", "gb11643_length"),
        ("11010519491231002X1", "gb11643_length"),
        ("1101051949123100AX", "gb11643_format"),
        ("11010519491231002Y", "gb11643_format"),
        ("110105194913310021", "gb11643_birth_date"),
        ("110105194912310021", "gb11643_check"),
        ("１１０１０５１９４９１２３１００２X", "gb11643_format"),
    ],
)
def test_invalid_numbers_name_the_rule(value: str, rule: str) -> None:
    with pytest.raises(nid.InvalidNationalId) as info:
        nid.validate(value)
    assert info.value.rule == rule
    assert value not in str(info.value)


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_exactly_one_check_character_is_accepted(first17: str) -> None:
    accepted = []
    for c in "0123456789X":
        try:
            nid.validate(first17 + c)
            accepted.append(c)
        except nid.InvalidNationalId as exc:
            assert exc.rule in {"gb11643_check", "gb11643_birth_date"}
    assert len(accepted) <= 1
    if accepted:
        assert accepted[0] == nid.check_character(first17)


def test_mask_keeps_region_and_last_four() -> None:
    assert nid.mask("11010519491231002X") == "110105********002X"
