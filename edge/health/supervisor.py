"""Supervision of the daemon's long-running tasks: a task that fails is never silent.

A sensor's task (a water probe's watch, a mat's reader, a trap's timer) runs
until the daemon stops.  Should one raise anyway (a driver bug, an exception
type nobody expected from the hardware), asyncio would keep the exception to
itself and the sensor would go quiet while heartbeats still called it fine.
:class:`Supervisor` runs each such task instead and, when it raises
(cancellation is the daemon stopping, not a failure; returning is a failure
too, since these tasks never end on their own):

* logs it with its traceback (the same error again: one line with the count);
* reports ``sensor_fault`` (``fault = "task_failed"``) through the daemon's
  ``record(SensorFault(...))`` callback, once per episode;
* shows the sensor as ``"fault"`` (:meth:`Supervisor.sensor_states`, merged into
  the heartbeat's ``sensors``) from that report until it has recovered;
* starts it again after a delay that doubles per failure in a row up to a cap,
  with jitter (half the ceiling plus a random part of the other half), so a
  fleet does not retry in step and a failing task never spins;
* reports ``sensor_recovered`` once the task has run again for ``stable_s``.

The class of the error decides how (``drivers.errors``, never its message): a
:class:`~drivers.errors.TransientDriverError` (a bus error, a silent UART, a
bad frame) may succeed if simply tried again, so it is retried
quickly and reported only when it keeps failing; anything else (a
``LoopFault``, an unexpected ``ValueError`` or ``RuntimeError``) needs someone to
act or is a bug, so it is reported at once and retried on a longer backoff.

Wiring: the daemon spawns ``supervisor.supervise(watch.run, what, sensor=name)``
(a coroutine *function*, so each attempt gets a fresh coroutine) as it spawns
any other task; cancelling that task stops the supervised one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from drivers.errors import TransientDriverError
from edge.event import SensorFault, SensorRecovered
from edge.link.recorder import Record

log = logging.getLogger(__name__)


TaskFactory = Callable[[], Coroutine[Any, Any, Any]]
"""A coroutine function: called once per attempt (a coroutine cannot be awaited twice)."""

FAULT_CODE = "task_failed"


@dataclass(frozen=True)
class RestartPolicy:
    """How long to wait before starting a failed task again, and when it counts as recovered."""

    transient_first_s: float = 1.0
    """Ceiling of the first delay after a transient driver error ..."""
    permanent_first_s: float = 30.0
    """... and after anything else (a permanent fault or a bug)."""
    max_s: float = 300.0
    """The ceiling doubles per failure in a row up to this."""
    stable_s: float = 60.0
    """A task that has run this long again has recovered (its failures in a row reset)."""
    transient_report_after: int = 3
    """Transient failures in a row before they are reported (permanent ones: at once)."""

    def __post_init__(self) -> None:
        for name in ("transient_first_s", "permanent_first_s", "max_s", "stable_s"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
        if self.transient_report_after < 1:
            raise ValueError(
                f"transient_report_after: must be >= 1, got {self.transient_report_after!r}"
            )

    def ceiling(self, failures: int, transient: bool) -> float:
        """The longest delay after the ``failures``-th failure in a row (1, 2, ...)."""
        first = self.transient_first_s if transient else self.permanent_first_s
        return min(self.max_s, first * 2.0 ** min(max(failures - 1, 0), 60))


def is_transient(exc: BaseException) -> bool:
    """A driver's own verdict, by class (:class:`TransientDriverError`); nothing else is."""
    return isinstance(exc, TransientDriverError)


@dataclass
class SupervisedTask:
    """What the supervisor knows of one task (read it; the supervisor writes it)."""

    what: str
    """The task's name in logs ("water river")."""
    sensor: str | None
    """The sensor it serves: the name in events and in the heartbeat's ``sensors``."""
    state: Literal["running", "waiting", "stopped"] = "running"
    """``waiting``: failed, to be started again at ``retry_at``."""
    failures_in_row: int = 0
    restarts: int = 0
    """Times it was started again after a failure."""
    last_error: str | None = None
    """``repr`` of the latest failure."""
    last_transient: bool = False
    retry_at: float | None = None
    """``time.monotonic()`` of the next start while ``waiting``."""
    fault_reported: bool = False
    """A ``sensor_fault`` went out and no ``sensor_recovered`` yet: the sensor shows ``fault``."""
    fault_since: float | None = None
    """Wall-clock time of the first failure of this episode."""
    _last_logged: str | None = field(default=None, repr=False)
    _repeats: int = field(default=0, repr=False)

    @property
    def name(self) -> str:
        return self.sensor or self.what

    @property
    def faulted(self) -> bool:
        return self.fault_reported


class Supervisor:
    """Runs long-running tasks; reports, restarts and tracks the ones that fail."""

    def __init__(
        self,
        record: Record,
        *,
        policy: RestartPolicy | None = None,
        rng: Callable[[], float] = random.random,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._record = record
        self.policy = policy or RestartPolicy()
        """Read at each failure: a test (or the daemon) may set a faster one before start."""
        self._rng = rng
        self._wall = wall
        self.tasks: dict[str, SupervisedTask] = {}
        """Per task, by its ``what``."""

    # -- for the heartbeat ----------------------------------------------------------

    def sensor_states(self) -> dict[str, str]:
        """``{sensor: "fault"}`` for each sensor whose task failed and has not recovered."""
        return {
            t.sensor: "fault" for t in self.tasks.values() if t.sensor is not None and t.faulted
        }

    # -- running a task ---------------------------------------------------------------

    async def supervise(
        self, factory: TaskFactory, what: str, *, sensor: str | None = None
    ) -> None:
        """Run ``factory()`` until cancelled, starting it again whenever it fails."""
        if what in self.tasks and self.tasks[what].state != "stopped":
            raise ValueError(f"a task named {what!r} is already supervised")
        task = self.tasks[what] = SupervisedTask(what=what, sensor=sensor)
        try:
            while True:
                task.state = "running"
                task.retry_at = None
                exc = await self._attempt(task, factory)
                delay = await self._failed(task, exc)
                task.state = "waiting"
                task.retry_at = time.monotonic() + delay
                await asyncio.sleep(delay)
                task.restarts += 1
        finally:
            task.state = "stopped"
            task.retry_at = None

    async def _attempt(self, task: SupervisedTask, factory: TaskFactory) -> Exception:
        """One run of the task: the exception it ended with (cancellation propagates)."""
        try:
            coro = factory()
        except Exception as exc:  # noqa: BLE001 - the supervisor must never die
            return exc
        inner = asyncio.get_running_loop().create_task(coro, name=task.what)
        try:
            stable = self.policy.stable_s
            done, _ = await asyncio.wait({inner}, timeout=stable)
            if not done:
                await self._stable(task)
            result = await inner
        except asyncio.CancelledError:
            if inner.cancelled() and not _cancelling():
                # the task cancelled itself (nobody cancelled us): a failure like any other
                return RuntimeError(f"{task.what} was cancelled from inside")
            raise
        except Exception as exc:  # noqa: BLE001 - the supervisor must never die
            return exc
        finally:
            if not inner.done():
                inner.cancel()
                await asyncio.gather(inner, return_exceptions=True)
        return RuntimeError(f"{task.what} ended (returned {result!r}); it should run until stopped")

    async def _failed(self, task: SupervisedTask, exc: Exception) -> float:
        """Log, maybe report; the delay before the next attempt."""
        transient = is_transient(exc)
        task.failures_in_row += 1
        task.last_error = repr(exc)
        task.last_transient = transient
        if task.fault_since is None:
            task.fault_since = self._wall()
        ceiling = self.policy.ceiling(task.failures_in_row, transient)
        delay = ceiling / 2 + self._rng() * ceiling / 2
        kind = "transient" if transient else "permanent"
        signature = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
        if signature != task._last_logged:
            task._last_logged, task._repeats = signature, 0
            log.error(
                "%s failed (%s, %d in a row); starting it again in %.1f s",
                task.what,
                kind,
                task.failures_in_row,
                delay,
                exc_info=exc,
            )
        else:
            task._repeats += 1
            log.warning(
                "%s failed again (%s, same error, %d in a row): %r; starting it again in %.1f s",
                task.what,
                kind,
                task.failures_in_row,
                exc,
                delay,
            )
        due = not transient or task.failures_in_row >= self.policy.transient_report_after
        if due and not task.fault_reported:
            task.fault_reported = True
            where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
            at = (
                f"{where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno}"
                if where
                else msgspec.UNSET
            )
            await self._report(
                SensorFault(
                    sensor=task.name,
                    fault=FAULT_CODE,
                    message=f"{task.what} failed: {exc!r}; restarting it",
                    error=type(exc).__name__,
                    transient=transient,
                    failures=task.failures_in_row,
                    retry_in_s=round(delay, 1),
                    at=at,
                )
            )
        return delay

    async def _stable(self, task: SupervisedTask) -> None:
        """The task has run ``stable_s`` without failing: a new episode starts."""
        task.failures_in_row = 0
        task._last_logged = None
        if not task.fault_reported:
            task.fault_since = None
            return
        since = task.fault_since if task.fault_since is not None else self._wall()
        task.fault_reported = False
        task.fault_since = None
        log.info("%s has run for %.0f s again: recovered", task.what, self.policy.stable_s)
        await self._report(
            SensorRecovered(
                sensor=task.name,
                fault=FAULT_CODE,
                down_s=round(self._wall() - since, 1),
                restarts=task.restarts,
            )
        )

    async def _report(self, data: SensorFault | SensorRecovered) -> None:
        try:
            await self._record(data)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not record %s for %s", data.kind, data.sensor)


def _cancelling() -> bool:
    """Whether the current task has a cancellation request pending."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0
