"""The client's exceptions: one class per kind of failure, so callers can react to each."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of every failure the client reports; catch this to handle them all."""


class KeyFileError(ClientError):
    """A key file is missing, unreadable, not Ed25519, or would be overwritten."""


class ReportError(ClientError):
    """A report cannot be signed as given (not UTF-8 JSON, floats for money, ...)."""


class TransportError(ClientError):
    """No HTTP answer from the registry (connection refused, timeout) after every retry."""


class RegistryError(ClientError):
    """The registry answered with an error; ``problem`` holds its RFC 9457 problem details."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(self.describe())

    @property
    def code(self) -> str:
        """The stable machine-readable code (``report_id_conflict``, ...), or ``http_<status>``."""
        code = self.problem.get("code")
        return code if isinstance(code, str) else f"http_{self.status}"

    @property
    def detail(self) -> str:
        detail = self.problem.get("detail")
        return detail if isinstance(detail, str) else ""

    @property
    def field_errors(self) -> list[dict[str, str]]:
        """The per-field errors ``[{field, rule, message}]``; empty when there are none."""
        errors = self.problem.get("errors")
        if not isinstance(errors, list):
            return []
        return [
            {k: str(v) for k, v in e.items() if k in ("field", "rule", "message")}
            for e in errors
            if isinstance(e, dict)
        ]

    def describe(self) -> str:
        """A multi-line human summary: status, code, detail, then one line per field error."""
        lines = [f"{self.status} {self.code}: {self.detail}".rstrip(": ")]
        lines += [
            f"  {e.get('field', '?')}: {e.get('rule', '?')} - {e.get('message', '')}"
            for e in self.field_errors
        ]
        return "\n".join(lines)


class ReceiptInvalid(ClientError):
    """A receipt failed verification; ``reason`` says which check (stable, for scripts)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")
