"""One exception root for ``edge/``: a caller can catch every error of ours with ``EdgeError``,
and code that knows only the builtins still catches each leaf (STYLE.md point 7).  That every
class is under it is checked from the source in ``tests/test_exception_roots.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, parse
from edge.errors import EdgeError
from edge.link.outbox import Outbox, OutboxError


def test_a_bad_config_is_caught_as_ours_and_as_a_value_error() -> None:
    with pytest.raises(EdgeError) as caught:
        parse("[device]\nid = 3\n")
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)
    assert "device.id" in str(caught.value)


async def test_a_closed_outbox_refuses_as_ours_and_as_a_runtime_error(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    outbox.open()
    outbox.close()
    with pytest.raises(EdgeError) as caught:
        await outbox.retry()
    assert isinstance(caught.value, OutboxError) and isinstance(caught.value, RuntimeError)
