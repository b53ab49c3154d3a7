"""c. Memory and e. idle cycle cost: `atomsync run` polling one feed with nothing to do.

The daemon runs with `poll.interval_seconds: 0.01` on one feed whose state holds the keys of
5,000 events handled over the last day (all within the retention window, none inside the
overlap window) while HCM has nothing new: every poll answers an empty page. It publishes to
the ONS simulator, so the oci client is built as in production. Its RSS (VmRSS) and CPU (utime + stime, all
threads) are read from /proc once start-up is over (the first cycle done) and again after
1,000 more idle cycles; cycles are counted by the HCM simulator as requests arrive.

Baselines: the RSS of `python -c "import oci, requests, feedparser, yaml"` in the same venv,
and the CPU per request of a bare `requests` loop (one keep-alive Session, Basic auth) that
sends the daemon's own last request (URL and query) to the same simulator on the daemon's
schedule (one request every 0.01 s: a process that sleeps between requests pays more per
request than one that loops flat out, so the loop sleeps as the daemon does).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from atomsync.sim.sandbox import PASSWORD, USERNAME, Sandbox
from atomsync.state import FeedState, FileStore
from atomsync.timeutil import format_ms
from tests.bench.common import (
    PYTHON,
    ROOT,
    Daemon,
    Figure,
    Goal,
    RequestCounter,
    bare_client,
    cli_env,
    cpu_seconds,
    median,
    rss_bytes,
    wait_until,
)

CYCLES = 1000
RETAINED_KEYS = 5000
RUNS = 5
BASE_RUNS = 5
INTERVAL = 0.01
MB = 1024 * 1024

_IMPORTS = (
    "import oci, requests, feedparser, yaml\n"
    "for line in open('/proc/self/status'):\n"
    "    if line.startswith('VmRSS:'): print(int(line.split()[1]) * 1024)\n"
)


@dataclass
class IdleRun:
    rss_start: int
    rss_end: int
    cpu_per_poll: float  # the daemon's CPU seconds per idle feed poll
    wall_per_cycle: float
    bare_cpu_per_get: float  # the bare requests loop's, same URL and query


def seed_state(directory: Path, now_ms: int) -> None:
    """A watermark 10 minutes back and the keys of a day's events behind it."""
    watermark = now_ms - 600_000
    step = 23 * 3600_000 // RETAINED_KEYS
    keys = {}
    for i in range(RETAINED_KEYS):
        at = watermark - i * step
        keys[f"atomservlet:newhire:EMP{300100555000000 + i}@{format_ms(at)}"] = at
    directory.mkdir(parents=True, exist_ok=True)
    FileStore(directory).save("newhire", FeedState("updated", watermark, None, keys, RETAINED_KEYS))


def one_run(workdir: Path) -> IdleRun:
    with Sandbox(workdir / "sandbox") as box:
        counter = RequestCounter(box.hcm)
        seed_state(box.dir / "state", box.hcm.now_ms())
        config = box.write_config(poll={"interval_seconds": INTERVAL}, feeds=[{"name": "newhire"}])
        with Daemon(config, workdir) as daemon:
            # Start-up is over once the first cycle has answered and the second begun.
            wait_until(lambda: daemon.running() and counter.count >= 2, 60, "the first cycle")
            first, t0 = counter.count, time.monotonic()
            rss0, cpu0 = rss_bytes(daemon.pid), cpu_seconds(daemon.pid)

            def done() -> bool:
                return daemon.running() and counter.count >= first + CYCLES

            wait_until(done, 300, f"{CYCLES} idle cycles", interval=0.05)
            last, t1 = counter.count, time.monotonic()
            rss1, cpu1 = rss_bytes(daemon.pid), cpu_seconds(daemon.pid)
        feed = [r for r in box.hcm.requests if r.path.endswith("/newhire")]
        assert feed and all(r.status == 200 for r in feed), "an idle poll failed"
        assert not box.ons.accepted, "the idle feed published something"
        sample = feed[-1]
        bare = bare_client(
            box.hcm.url + sample.path,
            sample.query,
            USERNAME,
            PASSWORD,
            CYCLES,
            interval=INTERVAL,
        )
    polls = last - first
    return IdleRun(
        rss0,
        rss1,
        (cpu1 - cpu0) / polls,
        (t1 - t0) / polls,
        bare["cpu"] / CYCLES,
    )


def bare_imports_rss() -> int:
    out = subprocess.run(
        [PYTHON, "-c", _IMPORTS],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=ROOT,
        check=True,
    )
    return int(out.stdout.strip())


def run(workdir: Path) -> list[Figure]:
    runs = [one_run(workdir / f"run{i}") for i in range(RUNS)]
    base = median([bare_imports_rss() for _ in range(BASE_RUNS)])
    start = median([r.rss_start for r in runs])
    end = median([r.rss_end for r in runs])
    growth = median([r.rss_end - r.rss_start for r in runs])
    reps = f"median of {RUNS} daemon runs"
    base_what = f"RSS of python -c 'import oci, requests, feedparser, yaml' (median of {BASE_RUNS})"
    cpu = median([r.cpu_per_poll for r in runs])
    bare = median([r.bare_cpu_per_get for r in runs])
    wall = median([r.wall_per_cycle for r in runs])
    return [
        Figure(
            "c. memory",
            "RSS of atomsync run after start-up",
            start / MB,
            "MB",
            reps,
            base / MB,
            base_what,
            Goal("ratio", "<=", 1.15),
        ),
        Figure(
            "c. memory",
            f"RSS after {CYCLES} idle cycles",
            end / MB,
            "MB",
            reps,
            base / MB,
            base_what,
            Goal("ratio", "<=", 1.15),
            f"interval {INTERVAL:g} s; {wall * 1000:.1f} ms a cycle, sleep included",
        ),
        Figure(
            "c. memory",
            f"RSS growth over {CYCLES} idle cycles",
            growth / MB,
            "MB",
            reps + " (each: end - start)",
            goal=Goal("value", "<", 1.0),
            note="runs: " + ", ".join(f"{(r.rss_end - r.rss_start) / MB:+.2f}" for r in runs),
        ),
        Figure(
            "e. idle cycle cost",
            "CPU per idle feed poll (daemon)",
            cpu,
            "s",
            f"median of {RUNS} runs x {CYCLES} polls",
            bare,
            f"bare requests GET loop, same URL, query and schedule ({RUNS} x {CYCLES} GETs)",
            Goal("ratio", "<=", 1.5),
            f"{RETAINED_KEYS} keys retained; runs (daemon/bare): "
            + ", ".join(
                f"{r.cpu_per_poll * 1000:.2f}/{r.bare_cpu_per_get * 1000:.2f} ms" for r in runs
            ),
        ),
    ]
