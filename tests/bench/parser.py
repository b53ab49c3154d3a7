"""g. Parser: entries per second of `atomsync.atom.parse` on a 1,000-entry page.

Measured in this process (CPU time, `time.process_time`) on a page rendered by the HCM
simulator with its realistic entries. The share of a cycle is computed by `shares()` from
these figures and the daemon's own measurements (idle cost, backlog drain).
"""

from __future__ import annotations

import time
from pathlib import Path

from atomsync import atom, catalog
from atomsync.sim.hcm import render_feed
from atomsync.sim.hcmdata import EntryFactory
from tests.bench.common import Figure, median

BENCH = "g. parser"
REPEATS = 7
SMALL_REPEATS = 200


def page(n: int, seed: int = 1) -> bytes:
    coll = catalog.lookup("newhire")
    assert coll is not None
    factory = EntryFactory(seed)
    base = 1_717_200_000_000
    entries = [factory.make("newhire", updated_ms=base + i * 7) for i in range(n)]
    return render_feed("http://127.0.0.1:8080", coll, entries, now_ms=base + n * 7).encode()


def cpu_of(data: bytes, repeats: int) -> float:
    """Median CPU seconds of one parse."""
    times = []
    for _ in range(repeats):
        started = time.process_time()
        entries = atom.parse(data)
        times.append(time.process_time() - started)
    assert len(entries) == data.count(b"<entry>")
    return median(times)


class ParserFigures:
    def __init__(self) -> None:
        big = page(1000)
        atom.parse(big)  # imports and warm-up
        self.big_bytes = len(big)
        self.big_s = cpu_of(big, REPEATS)
        self.page25_s = cpu_of(page(25), SMALL_REPEATS)
        self.empty_s = cpu_of(page(0), SMALL_REPEATS)

    @property
    def rate(self) -> float:
        return 1000 / self.big_s


def run(workdir: Path) -> tuple[list[Figure], ParserFigures]:
    p = ParserFigures()
    figures = [
        Figure(
            BENCH,
            "atom.parse, 1,000-entry page",
            p.rate,
            "entries/s",
            f"median of {REPEATS} (CPU time)",
            note=f"page of {p.big_bytes / 1e6:.2f} MB; {p.big_s * 1000:.0f} ms a parse",
        ),
        Figure(
            BENCH,
            "atom.parse, 25-entry page (page_size)",
            p.page25_s,
            "s",
            f"median of {SMALL_REPEATS} (CPU time)",
        ),
        Figure(
            BENCH,
            "atom.parse, empty page (idle poll)",
            p.empty_s,
            "s",
            f"median of {SMALL_REPEATS} (CPU time)",
        ),
    ]
    return figures, p
