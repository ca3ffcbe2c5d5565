"""One exception root per package (STYLE.md point 7), read from the source of every module.

For ``edge/``, ``drivers/``, ``cloud/`` and ``deploy/``: every exception class a
package defines descends from that package's root (through its first base),
and every leaf also inherits the builtin it resembles, so a caller catches all
of a package's errors with its root and code that knows only the builtins
still catches each one.  Read with ``ast`` rather than imported, so a module
someone is editing need not import for this to run.
"""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_EXCEPTIONS = {
    name
    for name, obj in vars(builtins).items()
    if inspect.isclass(obj) and issubclass(obj, BaseException)
}
ROOTS = {
    "edge": "EdgeError",
    "drivers": "DriverError",
    "cloud": "NotifierError",
    "deploy": "DeployError",
}


def _classes(package: str) -> dict[str, tuple[str, list[str]]]:
    """Class name -> (where, base names) for every class the package defines."""
    found: dict[str, tuple[str, list[str]]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [
                    b.id if isinstance(b, ast.Name) else b.attr
                    for b in node.bases
                    if isinstance(b, ast.Name | ast.Attribute)
                ]
                found[node.name] = (f"{where}:{node.name}", bases)
    return found


def _is_exception(name: str, classes: dict[str, tuple[str, list[str]]], seen: set[str]) -> bool:
    if name in BUILTIN_EXCEPTIONS:
        return True
    if name not in classes or name in seen:
        return False
    seen.add(name)
    return any(_is_exception(b, classes, seen) for b in classes[name][1])


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_every_exception_descends_from_the_package_root(package: str) -> None:
    classes = _classes(package)
    root = ROOTS[package]
    assert classes[root][1] == ["Exception"], f"{root} is the root: it derives from Exception"
    checked = 0
    for name, (where, _) in classes.items():
        if name == root or not _is_exception(name, classes, set()):
            continue
        chain = [name]
        while chain[-1] != root:
            bases = classes[chain[-1]][1] if chain[-1] in classes else []
            first = bases[0] if bases else "(none)"
            assert first not in BUILTIN_EXCEPTIONS and first in classes, (
                f"{where}: {' -> '.join([*chain, first])} does not reach {root}"
            )
            chain.append(first)
        if package == "edge":  # every edge leaf resembles a builtin: it says which
            inherited = {b for link in chain for b in classes[link][1]} & BUILTIN_EXCEPTIONS
            assert inherited - {"Exception"}, f"{where}: inherits no builtin it resembles"
        checked += 1
    assert checked >= 4, f"found only {checked} exception classes in {package}/"
