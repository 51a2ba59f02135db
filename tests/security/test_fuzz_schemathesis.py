"""API fuzzing with schemathesis: every documented operation, signed as a real caller.

The operations are read from ``/v1/openapi.json`` when the test runs, so an endpoint added by
anyone is fuzzed without touching this file. Requests go through ``SigningMiddleware``, which
signs the exact bytes schemathesis sends (member key, operator key or borrower token, by the
route's audience): the generated bodies and parameters reach the views instead of stopping at
the signature check. Every answer must be a non-5xx, with a documented status, a documented
content type, and a body matching its documented schema.

Short form: 10 examples per operation (``FUZZ_EXAMPLES`` to change). ``SOAK=1`` (``make soak``):
100 per operation in both positive and negative generation, about 8,000 requests per engine.
"""

from __future__ import annotations

import os
import traceback
from collections import Counter

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from security.support import SigningMiddleware

SOAK = os.environ.get("SOAK") == "1"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100" if SOAK else "10"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if SOAK else [GenerationMode.POSITIVE]


def _fuzz(operation: APIOperation, mode: GenerationMode, statuses: Counter[int]) -> int:
    """Run one operation's examples; returns how many requests were sent."""
    sent = 0

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not SOAK,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if SOAK else [])],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        nonlocal sent
        sent += 1
        statuses[case.call_and_validate(checks=CHECKS).status_code] += 1

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # An operation without parameters or body has no invalid form: nothing to negate.
        if mode is not GenerationMode.NEGATIVE or sent:
            raise
    return sent


def test_every_documented_operation_survives_generated_requests(
    signing_app: SigningMiddleware, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", signing_app)
    failures: list[str] = []
    total = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, "the OpenAPI document lost its operations"
    for operation in operations:
        statuses: Counter[int] = Counter()
        for mode in MODES:
            try:
                total += _fuzz(operation, mode, statuses)
            except (Exception, BaseExceptionGroup) as exc:  # every operation's failures, reported
                detail = "".join(traceback.format_exception_only(exc)).strip()
                failures.append(f"{operation.label} [{mode.value}]: {detail[:3000]}")
        if statuses and set(statuses) <= {401, 403}:
            # The credentials never got through: the fuzzing of this operation proved nothing.
            failures.append(f"{operation.label}: only {dict(statuses)}; is the signing right?")
    with capsys.disabled():
        print(f"\nschemathesis: {len(operations)} operations, {total} requests")
    assert not failures, "\n\n".join(failures)
