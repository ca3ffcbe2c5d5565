from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sim.site import CloudSide


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudSide]:
    """Real mosquitto + real SMTP server + the notifier as its own process."""
    side = CloudSide(tmp_path / "cloud")
    side.start()
    try:
        yield side
    finally:
        side.close()
