"""``edge bytecode``: the optimised bytecode the updater compiles into a release.

That the real daemon runs from it, on a whole site, is checked in
``test_daemon_imports.py``; here: what the command says and refuses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import edge.daemon
from edge.bytecode import cached_path

ROOT = Path(__file__).resolve().parents[2]


def _bytecode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", "bytecode", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_check_names_the_modules_without_bytecode_and_fails(tmp_path: Path) -> None:
    proc = _bytecode("--check", "--prefix", str(tmp_path / "empty"))
    assert proc.returncode == 1
    assert f"no optimised bytecode in {tmp_path / 'empty'} for {edge.daemon.__file__}" in (
        proc.stderr
    )
    assert not (tmp_path / "empty").exists(), "a check writes nothing"


def test_compiled_bytecode_passes_the_check_until_a_file_goes_stale(tmp_path: Path) -> None:
    prefix = tmp_path / "pycache"
    made = _bytecode("--prefix", str(prefix))
    assert made.returncode == 0, made.stderr
    assert "compiled" in made.stdout and "(optimisation 2)" in made.stdout
    daemon_pyc = cached_path(str(edge.daemon.__file__), prefix)
    assert daemon_pyc.name.endswith(".opt-2.pyc") and daemon_pyc.is_relative_to(prefix)
    ok = _bytecode("--check", "--prefix", str(prefix))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("0 of the daemon's modules lack")
    # Bytecode of another version of the source (its mtime in the header differs), as
    # after a Debian update of the standard library: Python would not use it.
    data = bytearray(daemon_pyc.read_bytes())
    data[8] ^= 0xFF
    daemon_pyc.write_bytes(bytes(data))
    stale = _bytecode("--check", "--prefix", str(prefix))
    assert stale.returncode == 1
    assert stale.stdout.startswith("1 of the daemon's modules lack"), stale.stdout
    assert str(edge.daemon.__file__) in stale.stderr


def test_a_prefix_that_cannot_be_written_is_one_clear_error(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    proc = _bytecode("--prefix", str(blocked))
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"error: cannot compile the daemon's bytecode into {blocked}:"), line
    assert "Traceback" not in proc.stderr
