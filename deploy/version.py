"""Release versions: plain dotted numbers, so "is this a downgrade?" is never ambiguous.

The pattern is the daemon's (``edge.link.commands.VERSION_PATTERN``): a version the
daemon accepts in ``cmd/update`` is exactly one the updater can install.
"""

from __future__ import annotations

import re

from deploy.errors import DeployError
from edge.link.commands import VERSION_PATTERN

VERSION_RE = re.compile(VERSION_PATTERN)


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.4.2"`` -> ``(1, 4, 2, 0)``; anything but one to four dotted numbers is refused."""
    if not isinstance(text, str) or not VERSION_RE.fullmatch(text):
        raise DeployError(f"version {text!r} is not dotted numbers like 1.4.2")
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (4 - len(parts))
