from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sim.site import CloudSide


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudSide]:
    """Real mosquitto + real SMTP server + the notifier as its own process.

    The notifier mails every event here (no folding of bursts), so a test can
    count the device's events by the mails they make.
    """
    side = CloudSide(tmp_path / "cloud", coalesce=False)
    side.start()
    try:
        yield side
    finally:
        side.close()
