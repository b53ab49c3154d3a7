"""a. Backlog drain: 600 waiting events through a topic that takes R messages a minute.

The ONS simulator enforces R per topic over a sliding 60-s window (429 beyond it) and
atomsync is configured at the same R (`publisher.max_messages_per_minute`). R = 400/min makes
the drain last about 90 s: longer than the simulator's window, so the limit really is tested
in steady state, and short enough for the time budget. The achieved rate is taken between
the first and the last accepted message, by the simulator's clock. atomsync paces at 99 % of
R by design (atomsync/pacing.py, SAFETY), so 0.99 is the ceiling of the ratio.
"""

from __future__ import annotations

import json
from pathlib import Path

from atomsync.sim.sandbox import Sandbox
from tests.bench.common import Daemon, Figure, Goal, rss_bytes

BENCH = "a. backlog drain"
EVENTS = 600
RATE = 400  # messages per minute, both sides


class DrainResult:
    def __init__(self, rate: float, throttled: int, seconds: float, rss: int) -> None:
        self.rate = rate
        self.throttled = throttled
        self.seconds = seconds
        self.rss = rss


def run(workdir: Path) -> tuple[list[Figure], DrainResult]:
    with Sandbox(workdir / "sandbox", rate_per_minute=RATE) as box:
        box.hcm.add_hires(EVENTS, updated_ms=box.hcm.now_ms() - 1_200_000, spacing_ms=100)
        config = box.write_config(publisher={"max_messages_per_minute": RATE})
        expected = EVENTS / (RATE * 0.99) * 60
        with Daemon(config, workdir) as daemon:
            accepted = box.ons.wait_for(EVENTS, timeout=expected * 2 + 60)
            rss = rss_bytes(daemon.pid)
        rejected = box.ons.rejected
    first, last = accepted[0].received_at, accepted[EVENTS - 1].received_at
    rate = (EVENTS - 1) / (last - first) * 60
    throttled = sum(1 for r in rejected if r.status == 429)
    ids = {json.loads(m.body)["id"] for m in accepted}
    note = (
        f"R = {RATE}/min; {len(accepted)} accepted ({len(ids)} distinct ids), "
        f"{len(rejected)} rejected; drain took {last - first:.1f} s"
    )
    result = DrainResult(rate, throttled, last - first, rss)
    return [
        Figure(
            BENCH,
            "achieved publish rate",
            rate,
            "msg/min",
            f"1 drain of {EVENTS} events ({EVENTS - 1} intervals)",
            RATE,
            "R, the topic's limit and atomsync's setting",
            Goal("ratio", ">=", 0.97),
            note,
        ),
        Figure(
            BENCH,
            "429 answers from the topic",
            throttled,
            "",
            f"1 drain of {EVENTS} events",
            goal=Goal("value", "==", 0),
        ),
        Figure(
            BENCH,
            "RSS after the drain",
            rss / (1024 * 1024),
            "MB",
            "1 drain",
            note="a busy daemon, for comparison with c. (feedparser and the publish path loaded)",
        ),
    ], result
