"""Outbox figures: ingest at the cap against below it, and start-up with a backlog.

    .venv/bin/python benchmarks/outbox.py [--cap 100000] [--backlog 1000000] [--quick]

Everything runs through the real code on real SQLite files (synchronous=FULL,
WAL), each figure beside its baseline in the same run:

* **ingest at the cap** (issue: a full outbox recorded ~24 events/s): one outbox
  holding exactly ``--cap`` rows, so every commit evicts, against one holding
  the same rows with room to spare.  Both one put at a time (one commit each)
  and bursts of concurrent puts (group commit).  Target: full / below >= 0.5.
* **start-up with a backlog** (issue: 0.15 s -> 1.3 s at 1M events before the
  siren was armed): the daemon's ``start()`` (after which ``edge run`` tells
  systemd READY=1) on an empty outbox and on one with ``--backlog`` events
  waiting, and the time until actuators and detectors were armed
  (``Daemon.armed_at``).  Target: armed in the same time either way.  The
  integrity check that runs after READY is timed too.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.config import parse  # noqa: E402
from edge.daemon import Daemon  # noqa: E402
from edge.event import Event, Location, new_event_id  # noqa: E402
from edge.link.outbox import Outbox, Row  # noqa: E402
from edge.sim.site import device_config  # noqa: E402


def event(seq: int, severity: str = "info", kind: str = "anomaly") -> Event:
    return Event(
        id=new_event_id(),
        device="bench-1",
        site="bench",
        kind=kind,
        severity=severity,  # type: ignore[arg-type]
        ts=dt.datetime.now(dt.UTC),
        clock_synced=True,
        seq=seq,
        boot="boot",
        location=Location(lat=36.1, lon=137.9),
        data={"sensor": "pir_north", "i": seq},
    )


async def fill(box: Outbox, n: int, start: int = 1) -> None:
    """``n`` rows in big transactions (a backlog built quickly, not a figure)."""
    now = time.time()
    severities = ("alarm", "warning", "info")
    for lo in range(start, start + n, 10_000):
        rows = [
            Row.of(event(i, severities[i % 3]), now) for i in range(lo, min(start + n, lo + 10_000))
        ]
        await box.put_rows(rows)


async def ingest_rate(box: Outbox, n: int, *, concurrent: int, seq0: int) -> float:
    """Events per second recorded durably: ``concurrent`` puts in flight at a time."""
    t0 = time.perf_counter()
    for lo in range(0, n, concurrent):
        events = [event(seq0 + i) for i in range(lo, min(n, lo + concurrent))]
        results = await asyncio.gather(*(box.put(e) for e in events))
        assert all(results), "not durable"
    return n / (time.perf_counter() - t0)


async def bench_cap(folder: Path, cap: int, quick: bool) -> None:
    print(f"ingest with {cap:,} rows stored (synchronous=FULL, WAL):")
    full = Outbox(folder / "full.sqlite3", max_events=cap)
    below = Outbox(folder / "below.sqlite3", max_events=cap * 10)
    for box in (full, below):
        box.open()
        await fill(box, cap)
    try:
        assert await full.depth() == cap and await below.depth() == cap
        seq = cap + 1
        for label, n, concurrent in (
            ("one put at a time", 300 if quick else 2_000, 1),
            ("bursts of 200 concurrent puts", 2_000 if quick else 20_000, 200),
        ):
            rates_full, rates_below = [], []
            for _ in range(3):  # interleaved, so both see the same machine
                rates_below.append(await ingest_rate(below, n, concurrent=concurrent, seq0=seq))
                seq += n
                rates_full.append(await ingest_rate(full, n, concurrent=concurrent, seq0=seq))
                seq += n
            f, b = statistics.median(rates_full), statistics.median(rates_below)
            print(
                f"  {label:32s} below the cap {b:9,.0f} ev/s   at the cap {f:9,.0f} ev/s"
                f"   ratio {f / b:4.2f} (target >= 0.5)"
            )
        stats = await full.stats()
        assert stats.depth == cap, stats.depth
        print(f"  the full outbox still holds exactly {stats.depth:,} rows; evicted "
              f"{sum(stats.evicted.values()):,} (info first)")
    finally:
        full.close()
        below.close()


async def start_once(config_text: str) -> tuple[float, float, int]:
    daemon = Daemon(parse(config_text))
    t0 = time.monotonic()
    await daemon.start()
    ready = time.monotonic() - t0
    armed = daemon.armed_at - t0
    depth = await daemon.outbox.depth()
    await daemon.close()
    return ready, armed, depth


async def bench_start(folder: Path, backlog: int) -> None:
    print(f"daemon start-up (start() returns, then READY=1), empty outbox vs {backlog:,} waiting:")
    results: dict[str, list[tuple[float, float, int]]] = {}
    for label, n in (("empty", 0), (f"{backlog:,} waiting", backlog)):
        state = folder / f"start-{n}"
        state.mkdir()
        path = state / "outbox.sqlite3"
        if n:
            box = Outbox(path, max_events=max(n, 100))
            box.open()
            t0 = time.perf_counter()
            await fill(box, n)
            box.close()
            print(f"  (built the backlog in {time.perf_counter() - t0:.0f} s: "
                  f"{path.stat().st_size / 1e6:,.0f} MB)")
        # port 9: nothing listens there; the uplink keeps trying in the background
        text = device_config(path, 9, warmup_s=0).replace(
            "[outbox]\n", f"[outbox]\nmax_events = {max(n, 100_000)}\n"
        ) + '\n[health]\nmodem = "none"\nanomaly_models = false\n'
        results[label] = [await start_once(text) for _ in range(3)]
        if n:
            box = Outbox(path, max_events=n)
            box.open()
            t0 = time.perf_counter()
            verdict = await box.check_integrity()
            check_s = time.perf_counter() - t0
            box.close()
    for label, runs in results.items():
        ready = statistics.median(r[0] for r in runs)
        armed = statistics.median(r[1] for r in runs)
        print(f"  {label:18s} siren and detectors armed {armed * 1000:7.1f} ms   "
              f"READY {ready * 1000:7.1f} ms   depth {runs[0][2]:,}")
    empty, loaded = (statistics.median(r[1] for r in runs) for runs in results.values())
    print(f"  armed with the backlog / armed empty: {loaded / empty:.2f}x "
          "(target: the same either way)")
    print(f"  integrity check after READY (own read connection): {check_s:.1f} s, {verdict}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=int, default=100_000)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    folder = Path(tempfile.mkdtemp(prefix="outbox-bench-", dir=args.dir))
    try:
        await bench_cap(folder, args.cap, args.quick)
        await bench_start(folder, args.backlog)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
