"""The lint gate: ruff, with the rule set in pyproject.toml, finds nothing anywhere in the tree.

Every package, the tests, the benchmarks and the scripts: a stale ``noqa`` (RUF100) or a blind
``except Exception`` without a reason (BLE001) fails the suite like any other finding. ruff is
pinned in the ``test`` extra, so a new release cannot fail CI on its own; if it is missing the
test fails (``No module named ruff``), it does not skip.

Formatting (``ruff format --check``) is not part of the gate: the tree was never ruff-formatted,
and reformatting it whole would be a diff larger than the code it touches.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks passed!" in result.stdout, result.stdout + result.stderr
