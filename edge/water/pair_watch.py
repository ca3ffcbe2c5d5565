"""Two gauges on the same water, as the daemon runs them: both water watches hand it their
readings, it feeds :class:`edge.water.pair.GaugePair` and records what it finds.

A disagreement is an ``anomaly`` event of the first gauge (the water rule that names the
other in ``same_water_as``), ``tests = ["disagree"]``, pattern ``disagree``, its detail line
naming both gauges.  What was learnt (the difference's usual value and noise, and whether a
disagreement is open) is kept in ``pair-<first>-<second>.json`` in the state folder, written
when it changes: a restart must not learn a drifted difference as the new normal.  After
moving or re-levelling either gauge, delete that file and restart the daemon: the difference
is learnt again over 12 h (docs/configuration.md, ``same_water_as``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from edge.event import Anomaly
from edge.files import write_atomic
from edge.link.recorder import Record
from edge.water.pair import TEST, Agreement, Disagreement, GaugePair

log = logging.getLogger(__name__)


class PairWatch:
    """One pair of gauges (``first`` names ``second`` in its rule's ``same_water_as``)."""

    def __init__(
        self,
        first: str,
        second: str,
        tolerance_cm: float,
        *,
        record: Record,
        state_dir: Path | None,
    ) -> None:
        self.pair = GaugePair(first, second, tolerance_cm)
        self.record = record
        self.state_path = None if state_dir is None else state_dir / f"pair-{first}-{second}.json"
        self._kept = self.pair.state()
        if self.state_path is not None:
            self._resume()

    async def add(self, sensor: str, level_cm: float, t: float) -> None:
        """One reading of either gauge (monotonic ``t``): judged at once (a median of at most
        a few hundred values), recorded, and what was learnt kept when it changed."""
        learning = not self.pair.learnt
        for found in self.pair.add(t, sensor, level_cm):
            await self._tell(found)
        if not self.pair.learnt:
            return
        if learning:  # what an installer checks against the staff gauge
            log.info("water %s and %s: usual difference %+.1f cm learnt (noise %.2f cm; told "
                     "beyond %.1f cm)", self.pair.first, self.pair.second, self.pair.usual_cm,
                     self.pair.noise_cm, self.pair.tolerance)  # fmt: skip
        state = self.pair.state()
        if state != self._kept and self.state_path is not None:
            self._kept = state
            await asyncio.to_thread(self._save, state)

    async def _tell(self, found: Disagreement | Agreement) -> None:
        if isinstance(found, Disagreement):
            log.warning("water %s and %s disagree: %s", found.first, found.second, found.detail)
            await self.record(
                Anomaly(sensor=found.first, series="water", score=round(abs(found.shift_cm), 2),
                        threshold=round(found.tolerance_cm, 2), tests=[TEST],
                        pattern=TEST, detail=found.detail)
            )  # fmt: skip
        else:
            log.info("water %s and %s agree again (difference %+.1f cm)", found.first,
                     found.second, found.difference_cm)  # fmt: skip

    def _save(self, state: dict[str, object]) -> None:
        """Atomic; a failed write (a full card) is logged, never raised."""
        assert self.state_path is not None
        try:
            write_atomic(self.state_path, json.dumps({"version": 1, **state}).encode("utf-8"))
        except OSError as exc:
            log.warning("water %s and %s: cannot keep what was learnt in %s: %s",
                        self.pair.first, self.pair.second, self.state_path, exc)  # fmt: skip

    def _resume(self) -> None:
        assert self.state_path is not None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            if not isinstance(state, dict) or state.get("version") != 1:
                raise ValueError("not a version 1 state")
            if not self.pair.restore(state):
                raise ValueError("another pair's state")
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as exc:
            log.warning("water %s and %s: kept state %s not usable (%s): learning again",
                        self.pair.first, self.pair.second, self.state_path, exc)  # fmt: skip
            return
        self._kept = self.pair.state()
        if self.pair.learnt:
            log.info("water %s and %s: usual difference %+.1f cm (kept)", self.pair.first,
                     self.pair.second, self.pair.usual_cm)  # fmt: skip
