"""Progress of the steps that take more than a few seconds (writing a card, installing an update).

On a terminal: one line per phase, redrawn in place as it goes (bytes and
percent, or seconds waited of the most it may take), and kept, with the time
the phase took, once it is done.  Elsewhere (a pipe, a log file, journald): one
line per phase as it starts, nothing redrawn.  The seconds keep counting on a
terminal while a single long call runs (an ``mcopy`` of the bundle, ``pip``):
a small thread redraws the line twice a second.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Literal, TextIO

Unit = Literal["bytes", "s", "files"]


def _amount(value: float, unit: Unit) -> str:
    if unit == "bytes":
        return f"{value / 1e6:.1f}"
    return f"{value:.0f}"


def _unit(unit: Unit) -> str:
    return {"bytes": "MB", "s": "s", "files": "files"}[unit]


class Progress:
    """Phases of one long command, shown on ``out`` (standard error by default).

    ``live``: redraw in place (default: whether ``out`` is a terminal).
    ``enabled=False``: say nothing at all (a library call, a test that does not ask).
    """

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        live: bool | None = None,
        enabled: bool = True,
        prefix: str = "",
    ) -> None:
        self.out = out if out is not None else sys.stderr
        self.enabled = enabled
        if live is None:
            try:
                live = self.out.isatty()
            except (AttributeError, ValueError):
                live = False
        self.live = live and enabled
        self.prefix = prefix
        self._lock = threading.Lock()
        self._name: str | None = None
        self._total: float | None = None
        self._unit: Unit = "bytes"
        self._done = 0.0
        self._t0 = 0.0
        self._drawn = 0.0
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def silent(cls) -> Progress:
        return cls(enabled=False)

    # -- phases ----------------------------------------------------------------------------

    def phase(self, name: str, *, total: float | None = None, unit: Unit = "bytes") -> None:
        """End the current phase (if any) and start the next one."""
        if not self.enabled:
            return
        self.finish()
        with self._lock:
            self._name, self._total, self._unit, self._done = name, total, unit, 0.0
            self._t0 = time.monotonic()
            if self.live:
                self._draw()
                if self._ticker is None:
                    self._stop.clear()
                    self._ticker = threading.Thread(
                        target=self._tick, name="progress", daemon=True
                    )
                    self._ticker.start()
            else:
                size = ""
                if total is not None and unit != "s":
                    size = f" ({_amount(total, unit)} {_unit(unit)})"
                elif total is not None:
                    size = f" (at most {total:g} s)"
                self._write(f"{self.prefix}{name}{size}\n")

    def advance(self, amount: float) -> None:
        """So much more of the phase is done (bytes written, files unpacked)."""
        self.update(self._done + amount)

    def update(self, done: float, *, note: str = "") -> None:
        """The phase has ``done`` of its total (seconds waited, for a wait)."""
        if not self.enabled:
            return
        with self._lock:
            self._done = done
            self._note = note
            now = time.monotonic()
            if self.live and now - self._drawn >= 0.1:
                self._draw()

    def finish(self, result: str = "done") -> None:
        """End the current phase: on a terminal its line stays, with how long it took."""
        if not self.enabled:
            return
        with self._lock:
            if self._name is None:
                return
            if self.live:
                took = time.monotonic() - self._t0
                self._write(f"\r{self.prefix}{self._name}: {result} ({took:.1f} s)\x1b[K\n")
            self._name = None

    def close(self, result: str = "done") -> None:
        """End the last phase (``result`` says how, e.g. "failed") and stop redrawing."""
        self.finish(result)
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- drawing ---------------------------------------------------------------------------

    _note = ""

    def _line(self) -> str:
        assert self._name is not None
        elapsed = time.monotonic() - self._t0
        text = f"{self.prefix}{self._name}"
        if self._total and self._unit == "s":  # a wait: the seconds waited are the progress
            text += f": {max(elapsed, self._done):.0f} of at most {self._total:g} s"
        elif self._total:
            pct = min(100.0, 100.0 * self._done / self._total)
            text += (
                f": {_amount(self._done, self._unit)}/{_amount(self._total, self._unit)} "
                f"{_unit(self._unit)} {pct:3.0f} %  {elapsed:.0f} s"
            )
        else:
            text += f": {elapsed:.0f} s"
        if self._note:
            text += f" ({self._note})"
        return text

    def _draw(self) -> None:
        if self._name is None:
            return
        self._drawn = time.monotonic()
        self._write("\r" + self._line() + "\x1b[K")

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):
            pass  # a closed terminal never stops an install

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                if self._name is not None:
                    self._draw()
