"""f. 13 feeds: the wall time of one idle cycle over all of HCM's collections.

The HCM simulator answers each collection with its own latency (50-300 ms, uneven; the
slowest is 300 ms), and atomsync runs with the default `hcm.max_connections: 4`. A cycle's
wall time is read from the daemon's own status.json: `written` (stamped when the cycle's
last feed is done) minus the earliest `last_poll` (when each feed started). The baseline is
the slowest single-feed request alone: a bare `requests` GET of that collection.

With 4 connections the cycle can be no shorter than max(slowest, sum of latencies / 4); with
a uniform latency L that is ceil(13 / 4) * L = 4 L.
"""

from __future__ import annotations

import json
from pathlib import Path

from atomsync import catalog
from atomsync.sim.sandbox import PASSWORD, USERNAME, Sandbox
from atomsync.timeutil import parse_timestamp
from tests.bench.common import (
    Daemon,
    Figure,
    Goal,
    RequestCounter,
    bare_client,
    median,
    wait_until,
)

BENCH = "f. 13 feeds"
CYCLES = 12  # measured, after the first (sweep, connection set-up) is dropped
INTERVAL = 1.5
BASE_REPEATS = 10
CONNECTIONS = 4

# Seconds per collection, in catalog order: uneven, one clearly the slowest.
LATENCY = {
    "newhire": 0.12,
    "empassignment": 0.18,
    "empupdate": 0.15,
    "payupdate": 0.09,
    "termination": 0.06,
    "cancelworkrelship": 0.05,
    "workrelshipupdate": 0.11,
    "grades": 0.07,
    "jobs": 0.08,
    "locations": 0.06,
    "organizations": 0.10,
    "positions": 0.13,
    "availabilityPatternChange": 0.30,
}


def cycle_times(status: Path, want: int, daemon: Daemon) -> list[float]:
    """Wall seconds of the next `want` cycles, from status.json as the daemon writes it."""
    seen: dict[str, float] = {}

    def poll() -> bool:
        daemon.running()
        try:
            doc = json.loads(status.read_text())
        except (OSError, ValueError):
            return False
        feeds = doc.get("feeds") or {}
        polls = [f.get("last_poll") for f in feeds.values()]
        if len(polls) == len(LATENCY) and all(polls) and doc.get("written"):
            written = parse_timestamp(doc["written"])
            start = min(parse_timestamp(p) for p in polls)
            seen[doc["written"]] = (written - start) / 1000
        return len(seen) >= want

    wait_until(poll, want * INTERVAL * 3 + 30, f"{want} cycles", interval=0.02)
    return [seen[k] for k in sorted(seen)][:want]


def run(workdir: Path) -> list[Figure]:
    names = [c.name for c in catalog.COLLECTIONS.values()]
    assert sorted(names) == sorted(LATENCY), names
    with Sandbox(workdir / "sandbox") as box:
        for name, seconds in LATENCY.items():
            box.hcm.set_latency(name, seconds)
        counter = RequestCounter(box.hcm)
        config = box.write_config(
            poll={"interval_seconds": INTERVAL},
            feeds=[{"name": name, "start_at": "now"} for name in names],
        )
        with Daemon(config, workdir) as daemon:
            # Drop the first cycle: it sweeps and opens the connections.
            wait_until(lambda: daemon.running() and counter.count > len(names), 60, "a cycle")
            times = cycle_times(box.dir / "state" / "status.json", CYCLES + 1, daemon)[1:]
        slowest = max(LATENCY, key=lambda n: LATENCY[n])
        coll = catalog.lookup(slowest)
        assert coll is not None
        sample = next(r for r in box.hcm.requests if r.path.endswith("/" + slowest))
        bare = bare_client(
            box.hcm.url + sample.path, sample.query, USERNAME, PASSWORD, BASE_REPEATS, warmup=1
        )
    base = median(bare["walls"])
    floor = max(*LATENCY.values(), sum(LATENCY.values()) / CONNECTIONS)
    return [
        Figure(
            BENCH,
            "wall time of one idle cycle, 13 feeds",
            median(times),
            "s",
            f"median of {CYCLES} cycles",
            base,
            f"bare GET of the slowest feed ({slowest}, {LATENCY[slowest]:g} s; "
            f"median of {BASE_REPEATS})",
            Goal("ratio", "<=", 2.0),
            f"latencies 50-300 ms, sum {sum(LATENCY.values()):.2f} s; "
            f"floor with {CONNECTIONS} connections max(slowest, sum/{CONNECTIONS}) = "
            f"{floor:.3f} s; cycles min {min(times):.3f} s, max {max(times):.3f} s",
        ),
    ]
