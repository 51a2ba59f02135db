"""Batch intake: many signed reports in one request, each with its own outcome.

Banks send most of their reports in bulk (a month's changes at once). Each report in a batch is
still its own DSSE envelope with its own receipt or refusal, decided by the same rules as a
single report. The batch goes in chunks: a chunk's envelopes are verified and validated, and
what their rows need that depends on the report alone is built (CPU work, outside any write
transaction: on SQLite, while another worker holds the write lock), then the chunk is applied by
``registry.batch_apply`` with a few statements for the whole chunk, then committed. A failure
half-way leaves whole chunks accepted, never half of a report, and resending the batch is safe
because every report is idempotent on its envelope bytes.

Wire format (see docs/protocol.md): ``{"envelopes": ["<envelope JSON text>", ...]}``. Each
envelope travels as a JSON string holding its exact bytes, because the receipt names the SHA-256
of the bytes the member signed and sent, and a resend is recognised by those bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from crypto import dsse
from registry import payload as p
from registry.batch_apply import Accepted, ChunkApplier, Outcome, Prepared, Refused, prepare
from registry.errors import FieldError, MalformedReport, RegistryError, ValidationFailed
from registry.intake import Intake, check_signature, decode_payload, parse_envelope
from registry.models import Institution, MemberKey

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_REPORTS",
    "MAX_ENVELOPE_BYTES",
    "Accepted",
    "BatchIntake",
    "BatchResult",
    "Outcome",
    "Refused",
    "parse_batch",
]

MAX_BATCH_REPORTS = 10_000
"""Reports per batch. A month of a large issuer's changes is sent as several batches."""

MAX_ENVELOPE_BYTES = 1024 * 1024
"""The single-report body limit, kept per envelope inside a batch."""

MAX_BATCH_BYTES = 32 * 1024 * 1024
"""Body limit of the batch endpoint: 10,000 typical envelopes (~1.5 KB) with ample room."""

COMMIT_EVERY = 500
"""Reports per chunk and transaction. Bounds how long a writer holds SQLite's lock (a tenth to
half a second per chunk as measured, depending on the machine's load; the chunk's checks run
before it, outside the lock; other writers wait at most the busy timeout) and how much a failure
half-way has to redo; the chunks before it stay accepted. Larger chunks share each chunk's fixed
cost (its look-ups and commit) among more reports."""


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
        self._keys: dict[str, MemberKey | None] = {}

    def submit(
        self,
        session: Session | Callable[[], Session],
        caller: Institution,
        envelopes: Sequence[bytes],
        now: dt.datetime,
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
        known_keys: Sequence[MemberKey] = (),
    ) -> BatchResult:
        """Apply every envelope in order, committing every ``commit_every`` reports.

        ``session`` may be a callable giving it (``api.services.db``): it is called only when
        a chunk is ready to be written, so a request's nonce is written, and on SQLite the write
        lock taken, after the first chunk was checked. ``known_keys`` are keys already read
        (the one that signed the request): envelopes they signed need no look-up.

        Outcomes are reported (``on_outcome``) chunk by chunk, once the chunk is committed.
        Raises only on a registry bug or a database failure: the chunk in progress is rolled
        back and the chunks before it stay committed (resending the batch is safe).
        """
        if isinstance(session, Session):
            given = session

            def db() -> Session:
                return given

        else:
            db = session
        for key in known_keys:
            self._keys[key.keyid] = key
        outcomes: list[Outcome] = []
        writing: Session | None = None
        try:
            for start in range(0, len(envelopes), self._commit_every):
                chunk = envelopes[start : start + self._commit_every]
                prepared = self._prepare(db, caller, chunk, now)
                writing = db()
                done = self._apply_chunk(writing, caller, prepared, now)
                writing.commit()
                outcomes.extend(done)
                if on_outcome is not None:
                    for outcome in done:
                        on_outcome(outcome)
        except BaseException:
            if writing is not None:
                writing.rollback()
            raise
        return BatchResult(outcomes)

    def _prepare(
        self,
        db: Callable[[], Session],
        caller: Institution,
        chunk: Sequence[bytes],
        now: dt.datetime,
    ) -> list[Prepared | Refused]:
        """Verify and validate a chunk's envelopes and build what depends on each report alone:
        CPU work, outside any write transaction.

        Signing keys not known already are read once per batch; the look-up is committed at
        once, so that on SQLite the write lock is not held while signatures are checked.
        """
        parsed: list[dsse.Envelope | Refused] = []
        for raw in chunk:
            try:
                if len(raw) > MAX_ENVELOPE_BYTES:
                    raise ValidationFailed(
                        "an envelope in a batch may be at most 1 MiB, as a single report",
                        code="envelope_too_large",
                        errors=[
                            FieldError("envelope", "max_bytes", "must be at most 1048576 bytes")
                        ],
                    )
                parsed.append(parse_envelope(raw))
            except RegistryError as exc:
                parsed.append(Refused(exc))
        wanted = {
            s.keyid
            for e in parsed
            if not isinstance(e, Refused)
            for s in e.signatures
            if s.keyid not in self._keys
        }
        if wanted:
            for keyid in wanted:
                self._keys[keyid] = None
            session = db()
            for key in session.scalars(select(MemberKey).where(MemberKey.keyid.in_(wanted))):
                self._keys[key.keyid] = key
                session.expunge(key)  # kept as read, whatever later commits expire
            session.commit()
        return [
            e if isinstance(e, Refused) else self._prepare_one(caller, raw, e, now)
            for raw, e in zip(chunk, parsed, strict=True)
        ]

    def _prepare_one(
        self, caller: Institution, raw: bytes, envelope: dsse.Envelope, now: dt.datetime
    ) -> Prepared | Refused:
        try:
            keys = [self._keys[s.keyid] for s in envelope.signatures]
            check_signature(envelope, [k for k in keys if k is not None], caller, now)
            document = decode_payload(envelope.payload)
            report_id = p.peek_report_id(document)
        except RegistryError as exc:
            return Refused(exc)
        digest = hashlib.sha256(raw).hexdigest()
        try:
            report = self._intake.parse_payload(caller, document, now)
        except RegistryError as exc:
            return Prepared(raw, report_id, digest, None, exc)
        item = Prepared(raw, report_id, digest, report, None)
        prepare(self._intake, caller, item, now)
        return item

    def _apply_chunk(
        self,
        session: Session,
        caller: Institution,
        prepared: list[Prepared | Refused],
        now: dt.datetime,
    ) -> list[Outcome]:
        """The chunk through the set-based applier; on a unique-key race with a concurrent
        writer, again report by report through the single-report path (which retries)."""
        try:
            return ChunkApplier(self._intake, session, caller, now, self._one).apply(prepared)
        except (IntegrityError, OperationalError) as exc:
            if isinstance(exc, OperationalError) and not _is_deadlock(exc):
                raise
            session.rollback()
            session.add(caller)
        return [
            item if isinstance(item, Refused) else self._one(session, caller, item.raw, now)
            for item in prepared
        ]

    def _one(self, session: Session, caller: Institution, raw: bytes, now: dt.datetime) -> Outcome:
        """One report through the single-report path, in its own SAVEPOINT."""
        outcome: Outcome
        try:
            result = self._intake.submit_in_batch(session, caller, raw, now)
            outcome = Accepted(result.report_id, result.receipt, result.created)
        except RegistryError as exc:
            outcome = Refused(exc)
        # NOTE: each report starts from an empty session, as a single submission does in its
        # own request: objects left from an earlier report (a record and its in-memory
        # reports) would otherwise take part in this one's flushes. Everything is flushed
        # first, so it stays in the transaction; the caller's row is re-attached.
        session.flush()
        session.expunge_all()
        session.add(caller)
        return outcome


def _is_deadlock(exc: OperationalError) -> bool:
    """PostgreSQL's deadlock detector chose this transaction (SQLSTATE 40P01)."""
    return getattr(exc.orig, "sqlstate", None) == "40P01"
