"""Run the benchmarks, print the table and write bench-results.json (see tests/bench)."""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from tests.bench import drain, feeds13, idle, latency, parser, startup
from tests.bench.common import ROOT, Figure, Goal, fmt

ORDER = ("d", "g", "c", "e", "f", "b", "a")  # quick ones first; c and e share their runs


def table(figures: list[Figure]) -> str:
    head = ("benchmark", "figure", "measured", "baseline", "ratio", "goal", "result", "repeats")
    rows = [head]
    for f in figures:
        rows.append(
            (
                f.bench,
                f.name,
                fmt(f.value, f.unit),
                fmt(f.baseline, f.unit),
                "-" if f.ratio is None else f"{f.ratio:.3f}",
                f.goal.text(f.unit) if f.goal else "(reported)",
                {True: "pass", False: "MISS", None: "-"}[f.passed],
                f.repeats,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_share(
    p: parser.ParserFigures, idle_cpu: Optional[float], drain_result: Optional[drain.DrainResult]
) -> list[Figure]:
    """g.: the parser's share of a cycle, from this run's own figures."""
    out = []
    if idle_cpu is not None:
        out.append(
            Figure(
                parser.BENCH,
                "parse share of an idle poll's CPU",
                p.empty_s / idle_cpu * 100,
                "%",
                "from g. and e.",
                goal=Goal("value", "<=", 10),
                note=f"empty page {p.empty_s * 1e6:.0f} us / {idle_cpu * 1e6:.0f} us a poll",
            )
        )
    if drain_result is not None:
        parse_s = drain.EVENTS / p.rate
        out.append(
            Figure(
                parser.BENCH,
                "parse share of the backlog drain",
                parse_s / drain_result.seconds * 100,
                "%",
                "from g. and a.",
                goal=Goal("value", "<=", 10),
                note=f"{drain.EVENTS} entries = {parse_s:.2f} s of {drain_result.seconds:.1f} s",
            )
        )
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    ap.add_argument("--only", default="", help="comma-separated letters, e.g. c,e,f")
    ap.add_argument("--out", default=str(ROOT / "bench-results.json"))
    args = ap.parse_args(argv)
    chosen = [x for x in ORDER if not args.only or x in args.only.split(",")]
    # A deployment runs from bytecode (pip compiles at install); so does the benchmark.
    compileall.compile_dir(str(ROOT / "atomsync"), quiet=1)
    started = time.monotonic()
    figures: list[Figure] = []
    parsed: Optional[parser.ParserFigures] = None
    idle_cpu: Optional[float] = None
    drained: Optional[drain.DrainResult] = None
    with tempfile.TemporaryDirectory(prefix="atomsync-bench-") as tmp:
        work = Path(tmp)
        for letter in chosen:
            t0 = time.monotonic()
            print(f"running {letter} ...", file=sys.stderr, flush=True)
            new: list[Figure] = []
            if letter == "d":
                new = startup.run(work / "startup")
            elif letter == "g":
                new, parsed = parser.run(work / "parser")
            elif letter == "c" or (letter == "e" and "c" not in chosen):
                new = idle.run(work / "idle")
                idle_cpu = next(f.value for f in new if f.bench.startswith("e."))
                if letter == "e":
                    new = [f for f in new if f.bench.startswith("e.")]
                elif "e" not in chosen:
                    new = [f for f in new if f.bench.startswith("c.")]
            elif letter == "f":
                new = feeds13.run(work / "feeds13")
            elif letter == "b":
                new = latency.run(work / "latency")
            elif letter == "a":
                new, drained = drain.run(work / "drain")
            figures.extend(new)
            for f in new:
                print(f"  {f.bench}: {f.name} = {fmt(f.value, f.unit)}", file=sys.stderr)
            print(f"  ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    if parsed is not None:
        figures.extend(parse_share(parsed, idle_cpu, drained))
    figures.sort(key=lambda f: f.bench)
    elapsed = time.monotonic() - started
    print(table(figures))
    missed = [f for f in figures if f.passed is False]
    print(
        f"\n{sum(f.passed is True for f in figures)} goals met, {len(missed)} missed; "
        f"{elapsed:.0f} s; results in {args.out}"
    )
    doc: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "duration_seconds": round(elapsed, 1),
        "figures": [f.to_json() for f in figures],
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
