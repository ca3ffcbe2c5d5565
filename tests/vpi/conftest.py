"""The virtual Raspberry Pi stage is selected explicitly: ``pytest -m vpi tests/vpi``.

It builds (or reuses) an arm64 image and boots it under TCG emulation for a quarter
of an hour, so the default ``pytest`` run deselects it (not a skip: it never
starts).  Selected, it fails loudly when QEMU or the image tools are missing.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vpi: the virtual Raspberry Pi stage (slow; CI runs it)")


def _selected(config: pytest.Config) -> bool:
    return "vpi" in (config.option.markexpr or "") or os.environ.get("SATOYAMA_VPI") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _selected(config):
        return
    vpi = [i for i in items if i.get_closest_marker("vpi")]
    if vpi:
        config.hook.pytest_deselected(items=vpi)
        items[:] = [i for i in items if not i.get_closest_marker("vpi")]
