"""Batch intake: many signed reports in one request, each with its own outcome.

Banks send most of their reports in bulk (a month's changes at once). Each report in a batch is
still its own DSSE envelope and goes through exactly the single-report path (verify -> validate
-> apply -> receipt) inside its own SAVEPOINT, so one bad report does not sink the others. The
batch is committed in chunks: a failure half-way leaves whole reports accepted, never half of
one, and resending the batch is safe because every report is idempotent on its envelope bytes.

Wire format (see docs/protocol.md): ``{"envelopes": ["<envelope JSON text>", ...]}``. Each
envelope travels as a JSON string holding its exact bytes, because the receipt names the SHA-256
of the bytes the member signed and sent, and a resend is recognised by those bytes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy.orm import Session

from registry.errors import FieldError, MalformedReport, RegistryError, ValidationFailed
from registry.intake import Intake
from registry.models import Institution

MAX_BATCH_REPORTS = 10_000
"""Reports per batch. A month of a large issuer's changes is sent as several batches."""

MAX_ENVELOPE_BYTES = 1024 * 1024
"""The single-report body limit, kept per envelope inside a batch."""

MAX_BATCH_BYTES = 32 * 1024 * 1024
"""Body limit of the batch endpoint: 10,000 typical envelopes (~1.5 KB) with ample room."""

COMMIT_EVERY = 100
"""Reports per transaction. Bounds how long a writer holds SQLite's lock (other writers wait at
most the busy timeout, 30 s) and how much a failure half-way has to redo; the accepted reports
before it stay accepted. At the measured batch rates (docs/operations.md) a chunk holds the lock
for a few seconds at most."""


@dataclass(frozen=True)
class Accepted:
    """A report accepted now (``created``) or before (same bytes resent): its receipt."""

    report_id: str
    receipt: bytes
    created: bool


@dataclass(frozen=True)
class Refused:
    """A report refused with the same error a single submission would have got."""

    error: RegistryError


Outcome = Accepted | Refused


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[Outcome]

    @property
    def accepted(self) -> int:
        return sum(isinstance(o, Accepted) for o in self.outcomes)

    @property
    def refused(self) -> int:
        return len(self.outcomes) - self.accepted


def _duplicate_free(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _malformed("duplicate_key", f"key {key[:40]!r} appears more than once")
        out[key] = value
    return out


def _no_fraction(_text: str) -> NoReturn:
    raise _malformed("float_not_allowed", "numbers with a fraction or exponent are not allowed")


def _malformed(rule: str, message: str) -> MalformedReport:
    return MalformedReport(
        "the body is not a batch of envelopes",
        code="batch_malformed",
        errors=[FieldError("envelopes", rule, message)],
    )


def parse_batch(body: bytes) -> list[bytes]:
    """The envelopes' exact bytes, in order, or a refusal of the whole batch naming the rule.

    Only the wrapper is parsed here (with the standard library's C parser: the strict parser's
    character loop would cost seconds on a 15 MB body); each envelope is parsed strictly later,
    by the single-report path, and a broken one is refused on its own.
    """
    try:
        doc = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_duplicate_free,
            parse_float=_no_fraction,
            parse_constant=_no_fraction,
        )
    except UnicodeDecodeError:
        raise _malformed("invalid_utf8", "the body is not valid UTF-8") from None
    except (json.JSONDecodeError, RecursionError):
        raise _malformed("invalid_json", "the body is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"envelopes"}:
        raise _malformed("batch_v1", 'the body must be {"envelopes": [...]} and nothing else')
    items = doc["envelopes"]
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise _malformed("type_array", "envelopes must be an array of strings")
    if not items:
        raise ValidationFailed(
            "a batch holds at least one report",
            code="batch_empty",
            errors=[FieldError("envelopes", "min_items", "must hold at least one envelope")],
        )
    if len(items) > MAX_BATCH_REPORTS:
        raise ValidationFailed(
            f"a batch holds at most {MAX_BATCH_REPORTS} reports; split it",
            code="batch_too_large",
            errors=[
                FieldError(
                    "envelopes", "max_items", f"must hold at most {MAX_BATCH_REPORTS} envelopes"
                )
            ],
        )
    out: list[bytes] = []
    for text in items:
        try:
            out.append(text.encode("utf-8"))
        except UnicodeEncodeError:
            # A lone surrogate: no envelope can hold it; refused on its own, as malformed.
            out.append(b"\xff")
    return out


class BatchIntake:
    """Applies a batch of envelopes for one authenticated member."""

    def __init__(self, intake: Intake, *, commit_every: int = COMMIT_EVERY) -> None:
        self._intake = intake
        self._commit_every = max(1, commit_every)

    def submit(
        self,
        session: Session,
        caller: Institution,
        envelopes: Sequence[bytes],
        now: dt.datetime,
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> BatchResult:
        """Apply every envelope in order; commit every ``commit_every`` reports and at the end.

        Raises only on a registry bug or a database failure: the chunk in progress is rolled
        back and the chunks before it stay committed (resending the batch is safe).
        """
        outcomes: list[Outcome] = []
        try:
            for position, raw in enumerate(envelopes, start=1):
                outcome = self._one(session, caller, raw, now)
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
                if position % self._commit_every == 0:
                    session.commit()
            session.commit()
        except BaseException:
            session.rollback()
            raise
        return BatchResult(outcomes)

    def _one(self, session: Session, caller: Institution, raw: bytes, now: dt.datetime) -> Outcome:
        if len(raw) > MAX_ENVELOPE_BYTES:
            return Refused(
                ValidationFailed(
                    "an envelope in a batch may be at most 1 MiB, as a single report",
                    code="envelope_too_large",
                    errors=[FieldError("envelope", "max_bytes", "must be at most 1048576 bytes")],
                )
            )
        outcome: Outcome
        try:
            result = self._intake.submit_in_batch(session, caller, raw, now)
            outcome = Accepted(result.report_id, result.receipt, result.created)
        except RegistryError as exc:
            outcome = Refused(exc)
        # NOTE: each report starts from an empty session, as a single submission does in its
        # own request: objects left from an earlier report of the batch (a record and its
        # in-memory reports) would otherwise take part in this one's flushes (clearing a record
        # opened earlier in the batch would delete its reports twice). Everything is flushed
        # first, so it stays in the transaction; the caller's row is re-attached.
        session.flush()
        session.expunge_all()
        session.add(caller)
        return outcome
