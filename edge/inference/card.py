"""Where the packaged models live and how their cards are read (JSON only: no numpy, no LiteRT).

Light enough for ``edge validate`` and the daemon's start checks, which read a
card without loading its model; :mod:`edge.inference.runtime` builds on it.
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

__all__ = ["ModelError", "packaged_model", "read_card"]


class ModelError(EdgeError, ValueError):
    """A model cannot be used: missing or corrupt file, or it does not match its card."""


def packaged_model(name: str) -> tuple[Path, Path]:
    """(``.tflite``, ``card.json``) paths of a model shipped in the ``models`` package.

    Locates the package's folder without importing any of its code.
    """
    spec = find_spec("models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the models package (with the .tflite files) is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / name
    return folder / f"{name}.tflite", folder / "card.json"


def read_card(card_file: Path) -> dict[str, Any]:
    """A model card as a dict; :class:`ModelError` naming the file if it cannot be read."""
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model card missing: {card_file}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"model card unreadable: {card_file}: {e}") from None
    if not isinstance(card, dict):
        raise ModelError(f"model card {card_file} is not a JSON object")
    return card
