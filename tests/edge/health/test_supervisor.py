"""The supervisor with real asyncio tasks that raise: reported, restarted, recovered."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from typing import Any

import pytest

from drivers.errors import (
    BusError,
    DriverClosed,
    LoopFault,
    PortSettingsError,
    ProtocolError,
    SensorTimeout,
    TransientDriverError,
)
from edge.event import EventData, Severity
from edge.health.supervisor import RestartPolicy, Supervisor, is_transient
from tests.support.waiting import until

FAST = RestartPolicy(
    transient_first_s=0.01, permanent_first_s=0.02, max_s=0.08, stable_s=0.3,
    transient_report_after=3,
)


class Recorder:
    """Stands in for the daemon's record callback: keeps what was reported, and the
    supervisor's ``sensor_states()`` at that moment."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.states_then: list[dict[str, str]] = []
        self.supervisor: Supervisor | None = None

    async def __call__(
        self, data: EventData, *, severity: Severity | None = None, at: float | None = None
    ) -> None:
        self.events.append((data.kind, severity or data.severity or "", data.to_data()))
        if self.supervisor is not None:
            self.states_then.append(self.supervisor.sensor_states())

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, _, data in self.events if k == kind]


class Flaky:
    """A sensor task: fails with ``errors`` in turn (one per attempt), then runs (counting)."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.attempts: list[float] = []
        self.ticks = 0
        self.cancelled = 0

    async def run(self) -> None:
        self.attempts.append(time.monotonic())
        await asyncio.sleep(0)
        if self.errors:
            raise self.errors.pop(0)
        try:
            while True:
                self.ticks += 1
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def _supervisor(policy: RestartPolicy = FAST) -> tuple[Supervisor, Recorder]:
    record = Recorder()
    supervisor = Supervisor(record, policy=policy)
    record.supervisor = supervisor
    return supervisor, record


def _state(supervisor: Supervisor, what: str) -> str | None:
    task = supervisor.tasks.get(what)
    return None if task is None else task.state


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_failing_task_is_reported_restarted_and_recovers() -> None:
    supervisor, record = _supervisor()
    sensor = Flaky(ValueError("baudrate must be positive"), ValueError("baudrate must be positive"))
    task = asyncio.create_task(supervisor.supervise(sensor.run, "water river", sensor="level"))
    await until(lambda: bool(record.of("sensor_recovered")), 10, "the recovery")
    state = supervisor.tasks["water river"]
    assert len(sensor.attempts) == 3 and state.restarts == 2
    [fault] = record.of("sensor_fault")
    assert fault["sensor"] == "level" and fault["fault"] == "task_failed"
    assert fault["error"] == "ValueError" and fault["transient"] is False
    assert "baudrate must be positive" in fault["message"]
    assert fault["at"].startswith("test_supervisor.py:")
    [recovered] = record.of("sensor_recovered")
    assert recovered["sensor"] == "level" and recovered["restarts"] == 2
    assert recovered["down_s"] >= 0
    # the heartbeat's view: "fault" from the report until the recovery, then nothing to add
    assert record.states_then == [{"level": "fault"}, {}]
    assert supervisor.sensor_states() == {}
    assert sensor.ticks > 0 and state.state == "running" and state.failures_in_row == 0
    await _stop(task)
    assert sensor.cancelled == 1 and _state(supervisor, "water river") == "stopped"


async def test_the_sensor_shows_fault_while_its_task_is_down() -> None:
    supervisor, record = _supervisor(
        RestartPolicy(permanent_first_s=60, max_s=60, stable_s=0.3)
    )
    sensor = Flaky(RuntimeError("driver bug"))
    task = asyncio.create_task(supervisor.supervise(sensor.run, "mat a", sensor="mat_a"))
    await until(lambda: _state(supervisor, "mat a") == "waiting", 5, "the failure")
    assert supervisor.sensor_states() == {"mat_a": "fault"}
    assert supervisor.tasks["mat a"].retry_at is not None
    assert supervisor.tasks["mat a"].retry_at > time.monotonic() + 20  # 30-60 s: backing off
    assert len(record.of("sensor_fault")) == 1
    await _stop(task)
    assert supervisor.tasks["mat a"].state == "stopped"


async def test_the_failure_is_logged_with_its_traceback_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor, record = _supervisor()
    sensor = Flaky(*(ValueError("bad baudrate -9600") for _ in range(3)))
    caplog.set_level(logging.WARNING, logger="edge.health.supervisor")
    task = asyncio.create_task(supervisor.supervise(sensor.run, "water river", sensor="level"))
    await until(lambda: sensor.ticks > 0, 10, "the fourth attempt running")
    await _stop(task)
    failures = [r for r in caplog.records if "water river failed" in r.getMessage()]
    assert len(failures) == 3
    first, *again = failures
    assert first.levelno == logging.ERROR and first.exc_info is not None
    assert isinstance(first.exc_info[1], ValueError)
    assert "bad baudrate -9600" in caplog.text and "Traceback" in caplog.text
    assert all(r.exc_info is None and "same error" in r.getMessage() for r in again)
    assert len(record.of("sensor_fault")) == 1, "one report per episode"


async def test_cancellation_is_not_a_failure() -> None:
    supervisor, record = _supervisor()
    sensor = Flaky()
    task = asyncio.create_task(supervisor.supervise(sensor.run, "trap a", sensor="trap_a"))
    await until(lambda: sensor.ticks > 2, 5, "the task running")
    await _stop(task)
    assert sensor.cancelled == 1
    assert record.events == []
    assert supervisor.tasks["trap a"].state == "stopped"
    assert supervisor.tasks["trap a"].restarts == 0


async def test_cancelled_while_waiting_to_retry() -> None:
    supervisor, _ = _supervisor(RestartPolicy(permanent_first_s=60, max_s=60))
    sensor = Flaky(RuntimeError("x"))
    task = asyncio.create_task(supervisor.supervise(sensor.run, "mat a", sensor="mat_a"))
    await until(lambda: _state(supervisor, "mat a") == "waiting", 5, "the failure")
    await _stop(task)
    assert len(sensor.attempts) == 1 and supervisor.tasks["mat a"].state == "stopped"


async def test_transient_driver_errors_retry_quickly_and_are_reported_only_if_persistent() -> None:
    supervisor, record = _supervisor()
    brief = Flaky(BusError(errno.EIO, "bus glitch"), SensorTimeout("silent"))
    task = asyncio.create_task(supervisor.supervise(brief.run, "water a", sensor="a"))
    await until(lambda: brief.ticks > 0, 5, "the third attempt running")
    assert record.events == [], "two transient failures in a row are only logged"
    assert supervisor.sensor_states() == {}
    await _stop(task)

    persistent = Flaky(*(BusError(errno.EREMOTEIO, "no ack") for _ in range(4)))
    task = asyncio.create_task(supervisor.supervise(persistent.run, "water b", sensor="b"))
    await until(lambda: bool(record.of("sensor_recovered")), 10, "the recovery")
    await _stop(task)
    [fault] = record.of("sensor_fault")
    assert fault["sensor"] == "b" and fault["transient"] is True and fault["failures"] == 3
    assert fault["error"] == "BusError"


async def test_a_permanent_driver_error_is_reported_at_once_and_backs_off_longer() -> None:
    policy = RestartPolicy(transient_first_s=0.01, permanent_first_s=5, max_s=5, stable_s=0.3)
    supervisor, record = _supervisor(policy)
    sensor = Flaky(LoopFault("wire_break", 2.1))
    task = asyncio.create_task(supervisor.supervise(sensor.run, "water a", sensor="a"))
    await until(lambda: bool(record.of("sensor_fault")), 5, "the report")
    [fault] = record.of("sensor_fault")
    assert fault["transient"] is False and fault["failures"] == 1
    assert 2.5 <= fault["retry_in_s"] <= 5
    await _stop(task)


def test_the_driver_decides_transient_by_its_class() -> None:
    assert is_transient(BusError(errno.EIO, "x"))
    assert is_transient(SensorTimeout("x"))
    assert not is_transient(LoopFault("short"))
    assert not is_transient(ValueError("x"))
    assert not is_transient(OSError(errno.EIO, "x")), "not a driver's verdict"
    assert is_transient(ProtocolError("bad CRC"))
    assert not is_transient(PortSettingsError("baud rate refused"))
    assert not is_transient(DriverClosed("Siren is closed")), "a caller's bug, not the hardware"

    class Glitch(TransientDriverError):
        """A driver's own transient leaf: the class alone makes it retried quickly."""

    assert is_transient(Glitch("x"))


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(transient_first_s=1, permanent_first_s=30, max_s=300)
    assert [policy.ceiling(n, True) for n in range(1, 6)] == [1, 2, 4, 8, 16]
    assert [policy.ceiling(n, False) for n in range(1, 6)] == [30, 60, 120, 240, 300]
    assert policy.ceiling(10_000, False) == 300
    with pytest.raises(ValueError, match="max_s"):
        RestartPolicy(max_s=float("nan"))


async def test_delays_are_jittered_within_half_to_all_of_the_ceiling() -> None:
    for draw, low, high in ((0.0, 0.5, 0.5), (0.999, 0.9, 1.0)):
        supervisor = Supervisor(
            Recorder(),
            policy=RestartPolicy(permanent_first_s=8, max_s=8),
            rng=lambda draw=draw: draw,
        )
        sensor = Flaky(RuntimeError("x"))
        task = asyncio.create_task(supervisor.supervise(sensor.run, "t", sensor="s"))
        await until(lambda s=supervisor: _state(s, "t") == "waiting", 5, "the failure")
        retry_at = supervisor.tasks["t"].retry_at
        assert retry_at is not None
        delay = retry_at - time.monotonic()
        assert 8 * low - 0.5 <= delay <= 8 * high
        await _stop(task)


async def test_restarts_back_off_exponentially() -> None:
    policy = RestartPolicy(permanent_first_s=0.02, max_s=0.08, stable_s=5)
    supervisor, _ = _supervisor(policy)
    sensor = Flaky(*(RuntimeError("x") for _ in range(5)))
    task = asyncio.create_task(supervisor.supervise(sensor.run, "t", sensor="s"))
    await until(lambda: sensor.ticks > 0, 10, "the sixth attempt running")
    await _stop(task)
    gaps = [b - a for a, b in zip(sensor.attempts, sensor.attempts[1:], strict=False)]
    # each gap is at least half its ceiling: 0.02, 0.04, 0.08, 0.08, 0.08
    for gap, ceiling in zip(gaps, (0.02, 0.04, 0.08, 0.08, 0.08), strict=True):
        assert gap >= ceiling / 2


async def test_a_task_that_returns_is_a_failure_too() -> None:
    supervisor, record = _supervisor()
    runs = 0

    async def ends() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            return
        await asyncio.Event().wait()

    task = asyncio.create_task(supervisor.supervise(ends, "trap a", sensor="trap_a"))
    await until(lambda: bool(record.of("sensor_recovered")), 10, "the recovery")
    await _stop(task)
    [fault] = record.of("sensor_fault")
    assert fault["error"] == "RuntimeError" and "should run until stopped" in fault["message"]
    assert runs == 3


async def test_a_factory_that_raises_is_a_failure() -> None:
    supervisor, record = _supervisor()
    calls = 0
    sensor = Flaky()

    def factory() -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("cannot build")
        return sensor.run()

    task = asyncio.create_task(supervisor.supervise(factory, "mat a", sensor="mat_a"))
    await until(lambda: sensor.ticks > 0, 5, "the second attempt running")
    await _stop(task)
    assert record.of("sensor_fault")[0]["error"] == "ValueError"


async def test_a_task_cancelling_itself_is_a_failure() -> None:
    supervisor, record = _supervisor()
    runs = 0

    async def gives_up() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise asyncio.CancelledError
        await asyncio.Event().wait()

    task = asyncio.create_task(supervisor.supervise(gives_up, "mat a", sensor="mat_a"))
    await until(lambda: bool(record.of("sensor_recovered")), 10, "the recovery")
    await _stop(task)
    assert runs == 2 and "cancelled from inside" in record.of("sensor_fault")[0]["message"]


async def test_other_tasks_keep_running_while_one_is_down() -> None:
    supervisor, _ = _supervisor(RestartPolicy(permanent_first_s=60, max_s=60))
    broken, healthy = Flaky(RuntimeError("x")), Flaky()
    tasks = [
        asyncio.create_task(supervisor.supervise(broken.run, "water a", sensor="a")),
        asyncio.create_task(supervisor.supervise(healthy.run, "water b", sensor="b")),
    ]
    await until(lambda: _state(supervisor, "water a") == "waiting", 5, "a's failure")
    ticks = healthy.ticks
    await until(lambda: healthy.ticks > ticks + 5, 5, "b still running")
    assert supervisor.sensor_states() == {"a": "fault"}
    for task in tasks:
        await _stop(task)


async def test_a_broken_recorder_does_not_stop_supervision(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(
        data: EventData, *, severity: Severity | None = None, at: float | None = None
    ) -> None:
        raise OSError(errno.ENOSPC, "disk full")

    supervisor = Supervisor(broken, policy=FAST)
    sensor = Flaky(RuntimeError("x"))
    task = asyncio.create_task(supervisor.supervise(sensor.run, "t", sensor="s"))
    await until(lambda: sensor.ticks > 0, 5, "the restart")
    await _stop(task)
    assert "could not record sensor_fault for s" in caplog.text


async def test_a_name_is_supervised_once_at_a_time() -> None:
    supervisor, _ = _supervisor()
    sensor = Flaky()
    task = asyncio.create_task(supervisor.supervise(sensor.run, "t", sensor="s"))
    await until(lambda: sensor.ticks > 0, 5, "running")
    with pytest.raises(ValueError, match="already supervised"):
        await supervisor.supervise(sensor.run, "t", sensor="s")
    await _stop(task)
