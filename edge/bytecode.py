"""The daemon's optimised bytecode, compiled when a release is installed.

The daemon's unit runs it with ``PYTHONOPTIMIZE=2``: no docstrings and no
``assert`` code in memory, 3 MB less of RSS on a whole site (docs/bench.md,
"Memory"); and with ``PYTHONPYCACHEPREFIX`` in its release, where that bytecode
lies.  The daemon's user cannot write there (the release is root's, read-only),
and Python keeps no ``.opt-2.pyc`` of its own: without this step every start
would compile every module in memory (+5.6 MB, and seconds on a Pi Zero before
the siren is armed).  So the updater runs ``edge bytecode --prefix
RELEASE/pycache`` as root after pip, before the switch; nothing else writes
there.

What is compiled: every module of the daemon's own packages (and gpiozero's), and
every module of the standard library and of the dependencies that the daemon's
capabilities import (found by importing them here, as :data:`DAEMON_IMPORTS` lists).  A
module missed here still works: it is compiled in memory at each start.
``edge bytecode --check`` names such modules; the test suite runs the real
daemon on a whole site and checks that it loaded nothing without its bytecode.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import py_compile
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: The daemon's level of optimisation (``PYTHONOPTIMIZE`` in its unit): docstrings out.
OPTIMIZE = 2

#: Compiled whole (their sources only: nothing is run): ours, and gpiozero, whose
#: default pin factory tries each backend's module in turn (lgpio, RPi.GPIO, pigpio).
WHOLE_PACKAGES = ("edge", "drivers", "gpiozero")

#: Imported here so that what they import (the standard library's and the
#: dependencies' modules) is compiled too: each capability's watch, the fault rules
#: and the models' runtime, the pin factories a device uses, the serial and I2C
#: libraries, and what a running daemon imports late (host name lookups).
DAEMON_IMPORTS = (
    "edge.cli",
    "edge.daemon",
    "edge.inference.runtime",
    "edge.inference.posture_input",
    "edge.health.water_faults",
    "edge.health.mat_load_faults",
    "edge.nursery.watch",
    "edge.water.watch",
    "edge.wildlife.watch",
    "gpiozero.pins.mock",
    "serial_asyncio_fast",
    "smbus2",
    "concurrent.futures.thread",
    "encodings.idna",
    "encodings.ascii",
    "encodings.latin_1",
)

#: Compiled from their source without being imported: the lgpio module (gpiozero's
#: backend on a Pi) opens a notification pipe in its working folder at import.
SOURCE_ONLY = ("lgpio",)

#: Bytes 4-8 of a ``.pyc``: 0 for bytecode checked against its source's mtime and size.
_TIMESTAMP_FLAGS = b"\0\0\0\0"


@dataclass
class Compiled:
    """What :func:`compile_bytecode` did."""

    files: int = 0
    not_installed: list[str] = field(default_factory=list)
    """Names of :data:`DAEMON_IMPORTS` that do not import here (e.g. ``lgpio`` off a Pi)."""


@contextlib.contextmanager
def _prefix(prefix: Path) -> Iterator[None]:
    """``sys.pycache_prefix`` set to ``prefix`` (where ``cache_from_source`` points)."""
    old = sys.pycache_prefix
    sys.pycache_prefix = str(prefix.resolve())
    try:
        yield
    finally:
        sys.pycache_prefix = old


def cached_path(source: str, prefix: Path) -> Path:
    """Where Python looks for ``source``'s bytecode under ``prefix`` at :data:`OPTIMIZE`."""
    with _prefix(prefix):
        return Path(importlib.util.cache_from_source(source, optimization=OPTIMIZE))


def _sources(modules: Iterable[object]) -> set[str]:
    """The ``.py`` files the given modules were loaded from."""
    out: set[str] = set()
    for module in modules:
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None)
        if spec is not None and spec.has_location and origin and origin.endswith(".py"):
            out.add(origin)
    return out


def _whole_packages() -> set[str]:
    """The sources of :data:`WHOLE_PACKAGES` (not imported)."""
    out: set[str] = set()
    for name in WHOLE_PACKAGES:
        spec = importlib.util.find_spec(name)
        for folder in (spec and spec.submodule_search_locations) or []:
            out.update(str(p) for p in Path(folder).rglob("*.py"))
    return out


def _source_only() -> set[str]:
    """The sources of :data:`SOURCE_ONLY` that are installed here (not imported)."""
    specs = [importlib.util.find_spec(name) for name in SOURCE_ONLY]
    return {s.origin for s in specs if s and s.origin and s.origin.endswith(".py")}


def compile_bytecode(prefix: Path) -> Compiled:
    """Compile the daemon's modules at :data:`OPTIMIZE` into ``prefix``."""
    done = Compiled()
    sys.dont_write_bytecode = True  # this process writes only what it compiles below
    for name in DAEMON_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # the pin factory of a Pi, on a laptop
            done.not_installed.append(f"{name} ({exc})")
    loaded = _sources(list(sys.modules.values()))
    for source in sorted(loaded | _whole_packages() | _source_only()):
        py_compile.compile(
            source,
            cfile=str(cached_path(source, prefix)),
            dfile=source,
            doraise=True,
            optimize=OPTIMIZE,
            invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
        )
        done.files += 1
    return done


def _valid(cached: Path, source: str) -> bool:
    """Whether ``cached`` is bytecode Python would use for ``source`` (mtime and size)."""
    try:
        header = cached.read_bytes()[:16]
        st = os.stat(source)
    except OSError:
        return False
    return (
        len(header) == 16
        and header[:4] == importlib.util.MAGIC_NUMBER
        and header[4:8] == _TIMESTAMP_FLAGS
        and int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(header[12:16], "little") == st.st_size & 0xFFFFFFFF
    )


def without_bytecode(prefix: Path) -> list[str]:
    """The ``.py`` files of the loaded modules and of :data:`SOURCE_ONLY` with no valid
    bytecode in ``prefix``: each would be compiled in memory at every start."""
    sources = _sources(list(sys.modules.values())) | _source_only()
    return sorted(s for s in sources if not _valid(cached_path(s, prefix), s))


def main(prefix: Path, *, check: bool) -> int:
    """``edge bytecode``: compile (as the updater does), or ``--check`` what is there."""
    if check:
        for name in DAEMON_IMPORTS:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        missing = without_bytecode(prefix)
        for source in missing:
            print(f"no optimised bytecode in {prefix} for {source}", file=sys.stderr)
        print(f"{len(missing)} of the daemon's modules lack optimised bytecode in {prefix}")
        return 1 if missing else 0
    try:
        done = compile_bytecode(prefix)
    except (OSError, py_compile.PyCompileError) as exc:
        print(f"error: cannot compile the daemon's bytecode into {prefix}: {exc}", file=sys.stderr)
        return 1
    for name in done.not_installed:
        print(f"not installed here, not compiled: {name}", file=sys.stderr)
    print(f"compiled {done.files} modules (optimisation {OPTIMIZE}) into {prefix}")
    return 0
