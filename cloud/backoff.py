"""Backoff now lives in :mod:`edge.backoff` (one home for device and notifier).

Kept only so ``cloud/notifier.py`` (being split) imports it unchanged; new code
imports ``edge.backoff``.  Remove once the notifier's pieces do.
"""

from __future__ import annotations

from edge.backoff import Backoff

__all__ = ["Backoff"]
