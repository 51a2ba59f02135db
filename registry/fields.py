"""Field parsers shared by every JSON document the registry validates (reports, inquiries).

Each parser raises ``Invalid`` with a stable rule code; ``Collector`` gathers every broken rule
so the caller learns them all in one answer. Messages say what the rule requires and never echo
the submitted value: values may be personal.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from registry import national_id
from registry.currencies import ISO_4217
from registry.errors import FieldError

_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,15})(\.[0-9]{1,2})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")


class Collector:
    """Gathers every broken rule so the caller learns them all in one answer."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str, rule: str, message: str) -> None:
        self.errors.append(FieldError(field, rule, message))

    def take(
        self,
        obj: dict[str, Any],
        key: str,
        prefix: str,
        parse: Callable[[Any], T],
        *,
        required: bool = True,
    ) -> T | None:
        path = f"{prefix}{key}"
        if key not in obj or obj[key] is None:
            if required:
                self.add(path, "required", "is required")
            return None
        try:
            return parse(obj[key])
        except Invalid as exc:
            self.add(path, exc.rule, exc.message)
            return None

    def unknown(self, obj: dict[str, Any], allowed: frozenset[str], prefix: str) -> None:
        for key in sorted(set(obj) - allowed):
            self.add(f"{prefix}{key}", "unknown_field", "is not a field of this payload version")


class Invalid(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


def string(
    pattern: re.Pattern[str] | None = None, *, max_len: int = 200, describe: str = ""
) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid("type_string", "must be a string")
        if pattern is not None:
            if not pattern.fullmatch(value):
                raise Invalid("format", f"must be {describe}")
            return value
        text = value.strip()
        if not text:
            raise Invalid("not_empty", "must not be empty")
        if len(text) > max_len:
            raise Invalid("max_length", f"must be at most {max_len} characters")
        if _CONTROL.search(text):
            raise Invalid("no_control_characters", "must not contain control characters")
        return text

    return parse


def choice(enum_cls: type[E]) -> Callable[[Any], E]:
    def parse(value: Any) -> E:
        if not isinstance(value, str):
            raise Invalid("type_string", "must be a string")
        try:
            return enum_cls(value)
        except ValueError:
            # NOTE: listed only when refused: parsers are made per document, and listing an
            # enum's members on every call cost about 5% of a batch report's CPU.
            allowed = ", ".join(str(m.value) for m in enum_cls)
            raise Invalid("one_of", f"must be one of: {allowed}") from None

    return parse


def integer(minimum: int, maximum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("type_integer", "must be an integer")
        if not minimum <= value <= maximum:
            raise Invalid("range", f"must be between {minimum} and {maximum}")
        return value

    return parse


def amount_value(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise Invalid(
            "decimal_string",
            'must be a decimal string such as "1234.50" (numbers are refused: no floats for money)',
        )
    if not _AMOUNT.fullmatch(value):
        raise Invalid(
            "decimal_format",
            "must be a non-negative decimal with at most 2 places and at most 16 integer digits",
        )
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise Invalid("decimal_format", "must be a decimal") from None


def date_value(value: Any) -> dt.date:
    if not isinstance(value, str) or len(value) != 10:
        raise Invalid("date_format", "must be a date YYYY-MM-DD")
    try:
        parsed = dt.date.fromisoformat(value)
    except ValueError:
        raise Invalid("date_format", "must be a date YYYY-MM-DD") from None
    if parsed.year < 1970:
        raise Invalid("date_range", "must not be before 1970-01-01")
    return parsed


def national_id_value(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("type_string", "must be a string")
    try:
        return national_id.validate(value)
    except national_id.InvalidNationalId as exc:
        raise Invalid(exc.rule, exc.message) from None


def currency_code(value: Any) -> str:
    if not isinstance(value, str) or value not in ISO_4217:
        raise Invalid("iso4217", "must be an ISO 4217 alphabetic currency code such as CNY")
    return value


def json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid("type_object", "must be an object")
    return value
