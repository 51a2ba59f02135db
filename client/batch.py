"""Submit a file of any size in batches, with a progress bar, resuming after an interruption.

The input is JSON lines (one envelope's exact bytes per line) or a directory of envelope files.
A state file (JSON lines, appended and flushed to disk after every batch) records each
envelope's outcome, keyed by the SHA-256 of its exact bytes, with the receipt of every accepted
report. A rerun skips every envelope the state file already has an answer for, so an
interruption (crash, Ctrl-C, network loss) costs at most the batch in flight; and even that batch
is safe to send again, because the registry answers a resent envelope with its original receipt.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from client.errors import ClientError

DEFAULT_CHUNK = 1000
MAX_CHUNK = 10_000


@dataclass(frozen=True)
class Outcome:
    """The registry's answer for one envelope: a receipt (201/200) or a problem (4xx)."""

    sha256: str
    status: int
    report_id: str | None = None
    receipt: bytes | None = None
    code: str | None = None
    detail: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status in (200, 201)


@dataclass
class Summary:
    total: int = 0
    skipped: int = 0
    accepted: int = 0
    resent: int = 0
    refused: int = 0
    refused_before: int = 0
    refusals: dict[str, int] = field(default_factory=dict)


def iter_envelopes(source: Path) -> Iterator[bytes]:
    """Each envelope's exact bytes: the lines of a JSON-lines file, or a directory's files.

    Directory entries are taken in name order (``*.json`` only); blank lines are skipped.
    """
    if source.is_dir():
        for path in sorted(source.glob("*.json")):
            yield path.read_bytes().rstrip(b"\r\n")
        return
    with source.open("rb") as handle:
        for line in handle:
            data = line.rstrip(b"\r\n")
            if data.strip():
                yield data


def count_envelopes(source: Path) -> int:
    """How many envelopes ``iter_envelopes`` will give, counted without parsing (for progress)."""
    if source.is_dir():
        return sum(1 for _ in source.glob("*.json"))
    total = 0
    with source.open("rb") as handle:
        for line in handle:
            total += bool(line.strip())
    return total


class StateFile:
    """The outcomes recorded so far, loaded once and appended to after every batch.

    A line cut short by a crash is ignored: its batch is simply sent again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, int] = {}
        if path.exists():
            with path.open("rb") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                        self.done[str(record["sha256"])] = int(record["status"])
                    except (ValueError, KeyError, TypeError):
                        continue
        self._handle: IO[bytes] | None = None

    def __enter__(self) -> StateFile:
        try:
            self._handle = self.path.open("ab")
        except OSError as exc:
            raise ClientError(f"cannot write the state file {self.path}: {exc.strerror}") from None
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._handle is not None:
            self._handle.close()

    def record(self, outcomes: list[Outcome]) -> None:
        """Append the batch's outcomes and force them to disk before the next batch is sent."""
        assert self._handle is not None
        lines = []
        for o in outcomes:
            doc: dict[str, Any] = {"sha256": o.sha256, "status": o.status}
            if o.report_id is not None:
                doc["report_id"] = o.report_id
            if o.receipt is not None:
                doc["receipt"] = o.receipt.decode("utf-8")
            if o.code is not None:
                doc["code"] = o.code
            lines.append(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())
            self.done[o.sha256] = o.status
        self._handle.write(b"\n".join(lines) + b"\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())


class Progress:
    """A plain-text progress bar on stderr: redrawn in place on a terminal, a line per batch
    otherwise (logs stay readable)."""

    def __init__(self, total: int, stream: IO[str] | None = None, width: int = 30) -> None:
        self.total = max(total, 0)
        self.stream = stream or sys.stderr
        self.width = width
        self.started = time.monotonic()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, summary: Summary) -> None:
        done = summary.skipped + summary.accepted + summary.refused
        share = done / self.total if self.total else 1.0
        filled = int(self.width * share)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = (summary.accepted + summary.refused) / elapsed
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
            f"accepted {summary.accepted} refused {summary.refused} "
            f"skipped {summary.skipped} ({rate:.0f}/s)"
        )
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def submit_file(
    source: Path,
    state: StateFile,
    send: Callable[[list[bytes]], list[Outcome]],
    *,
    chunk: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
    check: Callable[[bytes, Outcome], None] | None = None,
) -> Summary:
    """Send every envelope of ``source`` not yet answered in ``state``, ``chunk`` at a time.

    ``send`` posts one batch and returns one outcome per envelope, in order; ``check`` may
    verify each receipt before it is recorded. Raises whatever ``send`` raises (unreachable,
    refused batch): what was recorded stays recorded, and a rerun goes on from there.
    """
    if not 1 <= chunk <= MAX_CHUNK:
        raise ClientError(f"the batch size must be between 1 and {MAX_CHUNK}")
    summary = Summary()
    pending: list[bytes] = []
    pending_digests: set[str] = set()

    def flush() -> None:
        outcomes = send(pending)
        if len(outcomes) != len(pending):
            raise ClientError("the registry answered a different number of results than sent")
        for raw, outcome in zip(pending, outcomes, strict=True):
            if check is not None and outcome.accepted:
                check(raw, outcome)
            if outcome.accepted:
                summary.accepted += 1
                summary.resent += outcome.status == 200
            else:
                summary.refused += 1
                key = outcome.code or f"http_{outcome.status}"
                summary.refusals[key] = summary.refusals.get(key, 0) + 1
        state.record(outcomes)
        pending.clear()
        pending_digests.clear()
        if progress is not None:
            progress.update(summary)

    for raw in iter_envelopes(source):
        summary.total += 1
        digest = hashlib.sha256(raw).hexdigest()
        if digest in state.done or digest in pending_digests:
            summary.skipped += 1
            summary.refused_before += state.done.get(digest, 200) not in (200, 201)
            continue
        pending.append(raw)
        pending_digests.add(digest)
        if len(pending) >= chunk:
            flush()
    if pending:
        flush()
    if progress is not None:
        progress.update(summary)
        progress.finish()
    return summary
