"""The domain's errors: one class per kind of refusal, mapped to HTTP in one place (api/errors.py).

Every error carries a stable machine-readable ``code`` and a ``detail`` sentence for people.
Neither may ever contain personal data or secrets: they end up in responses and logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One broken rule on one field: where (dotted path), which rule, and what it requires."""

    field: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


class RegistryError(Exception):
    """Base of every refusal the registry explains to its caller."""

    code = "registry_error"
    title = "Request refused"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        errors: list[FieldError] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.errors = list(errors or [])
        self.extra = dict(extra or {})


class NotAuthenticated(RegistryError):
    """The caller did not prove who it is (request signature missing, wrong, stale, replayed)."""

    code = "not_authenticated"
    title = "Authentication required"


class Forbidden(RegistryError):
    """The caller is known but may not do this (suspended, acting for another member)."""

    code = "forbidden"
    title = "Not allowed"


class NotFound(RegistryError):
    code = "not_found"
    title = "Not found"


class Conflict(RegistryError):
    """The request contradicts what the registry already holds (same id, other bytes; stale)."""

    code = "conflict"
    title = "Conflict with the current state"


class MalformedReport(RegistryError):
    """The bytes are not a well-formed envelope or payload."""

    code = "malformed"
    title = "Malformed input"


class ValidationFailed(RegistryError):
    """The payload is well formed but breaks one or more field rules."""

    code = "validation_failed"
    title = "Validation failed"


class PolicyViolation(RegistryError):
    """The report breaks a compliance rule of the policy (charging caps)."""

    code = "policy_violation"
    title = "Compliance rule violated"


class RateLimited(RegistryError):
    """A quota is used up; ``retry_after`` says in how many seconds it renews."""

    code = "rate_limited"
    title = "Quota exhausted"

    def __init__(self, detail: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class SchemaNotAtHead(RuntimeError):
    """The database schema does not match the code's migration head."""


class SetupError(RuntimeError):
    """Keys or instance files are missing or unusable."""


class MigrationBrokeReferences(RuntimeError):
    """A migration left rows naming rows that do not exist; it was rolled back."""
