"""gpiozero without ``importlib.metadata`` at import: it is loaded when an entry point is asked for.

gpiozero's ``devices`` and ``pins.mock`` modules import ``entry_points`` at import
time (``importlib_metadata`` first, the stdlib's ``importlib.metadata`` after), and
call it only to find a pin factory or a mock pin class *by name*: when
``[gpio] pin_factory`` is ``"auto"`` (gpiozero's default factory) or a pin class
is given as a string.  The daemon builds its factory itself (``mock``, ``lgpio``
...), so on a device the call never comes, but the import costs ~2.3 MB of RSS
(``importlib.metadata`` brings ``email``, ``zipfile``, ``csv``, ``tempfile``,
``importlib.resources``: 44 modules), a Pi Zero 2 W's memory for nothing.

:func:`install` registers a stand-in for the ``importlib_metadata`` backport (only
where the backport is not installed): its ``entry_points`` imports the stdlib's
``importlib.metadata`` on its first call and answers with it; any other name is
looked up there too, so a library that imports the backport gets the stdlib's
module in all but name, as it would have had from its own fallback.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

NAME = "importlib_metadata"


def _stdlib() -> types.ModuleType:
    import importlib.metadata

    return importlib.metadata


def entry_points(**params: Any) -> Any:
    """``importlib.metadata.entry_points(**params)``, imported on the first call."""
    return _stdlib().entry_points(**params)


class LazyMetadata(types.ModuleType):
    """The stand-in module: ``entry_points`` here, everything else from ``importlib.metadata``."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_stdlib(), name)


def install() -> None:
    """Register the stand-in, unless ``importlib_metadata`` is installed or already imported."""
    if NAME in sys.modules or importlib.util.find_spec(NAME) is not None:
        return
    module = LazyMetadata(NAME, __doc__)
    module.entry_points = entry_points  # type: ignore[attr-defined]
    sys.modules[NAME] = module
