"""b. Latency: an entry added to HCM until OCI Notifications accepted its message.

`poll.interval_seconds: 1`; each sample waits a random time (uniform over one interval)
after the previous message was accepted, so entries arrive at random phases of the cycle,
then adds one entry and waits for its message. Both ends are read on the same clock (the
simulators run in this process; the ONS simulator stamps `received_at` with time.time()).
The wait for the next cycle is up to one interval by design, so the goal is on the
latency minus the interval: what atomsync adds on top of its schedule.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from atomsync.sim.sandbox import Sandbox
from tests.bench.common import Daemon, Figure, Goal, RequestCounter, percentile, wait_until

BENCH = "b. latency"
SAMPLES = 50
INTERVAL = 1.0


def run(workdir: Path) -> list[Figure]:
    rng = random.Random(20240601)
    latencies: list[float] = []
    with Sandbox(workdir / "sandbox") as box:
        counter = RequestCounter(box.hcm)
        config = box.write_config(
            poll={"interval_seconds": INTERVAL}, feeds=[{"name": "newhire", "start_at": "now"}]
        )
        with Daemon(config, workdir) as daemon:
            wait_until(lambda: daemon.running() and counter.count >= 2, 60, "the first cycles")
            for i in range(SAMPLES):
                time.sleep(rng.uniform(0, INTERVAL))
                entry = box.hcm.add_entry("newhire")
                added = time.time()
                message = box.ons.wait_for(i + 1, timeout=10 * INTERVAL + 10)[i]
                assert json.loads(message.body)["id"] == entry.id
                latencies.append(message.received_at - added)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    reps = f"{SAMPLES} samples"
    note = (
        f"interval {INTERVAL:g} s; raw p50 {p50:.3f} s, p99 {p99:.3f} s, "
        f"min {min(latencies):.3f} s, max {max(latencies):.3f} s"
    )
    return [
        Figure(BENCH, "p50 latency - interval", p50 - INTERVAL, "s", reps, note=note),
        Figure(
            BENCH,
            "p99 latency - interval",
            p99 - INTERVAL,
            "s",
            reps + " (p99 interpolated)",
            goal=Goal("value", "<=", 0.5),
        ),
    ]
