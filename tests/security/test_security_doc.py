"""docs/security.md names, for each defence, the test that shows it: those tests must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPAN = re.compile(r"`([^`\n]+)`")
# `file.py`, `file.py::test_x`, or `::test_x` (another test in the file cited last on the line)
CITED = re.compile(r"(?P<file>[\w/]+\.py)?(?:::(?P<test>\w+))?")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_every_test_the_threat_model_cites_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    missing, cited = [], 0
    for line in text.splitlines():
        current: Path | None = None
        for span in SPAN.findall(line):
            match = CITED.fullmatch(span)
            if match is None or not (match.group("file") or match.group("test")):
                continue
            file, test = match.group("file"), match.group("test")
            if file:
                current = ROOT / "tests" / file
                if not current.exists():
                    missing.append(f"no file tests/{file}")
                    current = None
                    continue
            if test and current is not None:
                cited += 1
                if test not in _tests_in(current):
                    missing.append(f"tests/{current.relative_to(ROOT / 'tests')}::{test}")
    assert cited >= 40, f"only {cited} tests cited: is the pattern still right?"
    assert missing == [], "\n".join(missing)
