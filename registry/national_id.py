"""PRC resident ID numbers (GB 11643-1999): normalisation, check character, masking."""

from __future__ import annotations

import datetime as dt

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


class InvalidNationalId(ValueError):
    """Carries a rule code; never the number itself."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


def normalize(value: str) -> str:
    """Strip surrounding spaces and upper-case a trailing ``x``; the blind index sees this form."""
    return value.strip().upper()


def check_character(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character over the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def validate(value: str) -> str:
    """Return the normalised ID or raise ``InvalidNationalId`` naming the broken rule."""
    nid = normalize(value)
    if len(nid) != 18:
        raise InvalidNationalId("gb11643_length", "must be 18 characters (GB 11643-1999)")
    if not (nid[:17].isascii() and nid[:17].isdigit()) or nid[17] not in "0123456789X":
        raise InvalidNationalId(
            "gb11643_format", "must be 17 digits followed by a digit or X (GB 11643-1999)"
        )
    try:
        dt.date(int(nid[6:10]), int(nid[10:12]), int(nid[12:14]))
    except ValueError:
        raise InvalidNationalId(
            "gb11643_birth_date", "characters 7-14 must be a valid birth date YYYYMMDD"
        ) from None
    if check_character(nid[:17]) != nid[17]:
        raise InvalidNationalId(
            "gb11643_check", "check character does not match (ISO 7064 MOD 11-2, GB 11643-1999)"
        )
    return nid


def mask(nid: str) -> str:
    """``110101********1234``: region code and last four only."""
    return nid[:6] + "*" * (len(nid) - 10) + nid[-4:]
