"""Debian's Chromium for the browser tests (Playwright's own browser download is not
available): where it is, and the flags it needs on a machine with a closed network."""

from __future__ import annotations

from pathlib import Path
from typing import Final

CHROMIUM: Final = "/usr/bin/chromium"
"""Debian's package ``chromium`` (scripts/setup.sh installs it)."""
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    # without these Chromium keeps calling Google's hosts, refused here many at a time
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE: Final = Path(__file__).resolve().parents[1] / "data" / "axe" / "axe.min.js"
"""axe-core, vendored (tests/data/axe/VENDORED.md): injected into a page to check it."""
