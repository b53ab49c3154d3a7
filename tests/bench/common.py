"""What every benchmark shares: figures and goals, /proc readings, the daemon in a subprocess."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Callable, Optional

from atomsync.sim.hcm import HcmSimulator, RequestRecord

ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Goal:
    """`subject` (the ratio, or the value itself) must be `op` `limit`."""

    subject: str  # "ratio" | "value"
    op: str  # "<=" | ">=" | "<" | "=="
    limit: float

    def met(self, value: float) -> bool:
        return {
            "<=": value <= self.limit,
            ">=": value >= self.limit,
            "<": value < self.limit,
            "==": value == self.limit,
        }[self.op]

    def text(self, unit: str) -> str:
        suffix = "x" if self.subject == "ratio" else (f" {unit}" if unit else "")
        return f"{self.subject} {self.op} {self.limit:g}{suffix}"


@dataclass(frozen=True)
class Figure:
    bench: str  # "a. backlog drain"
    name: str
    value: float
    unit: str
    repeats: str  # how many measurements the value is the median (or total) of
    baseline: Optional[float] = None
    baseline_what: str = ""
    goal: Optional[Goal] = None  # None: reported only
    note: str = ""

    @property
    def ratio(self) -> Optional[float]:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def passed(self) -> Optional[bool]:
        if self.goal is None:
            return None
        subject = self.ratio if self.goal.subject == "ratio" else self.value
        return subject is not None and self.goal.met(subject)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["goal"] = self.goal.text(self.unit) if self.goal else None
        doc["ratio"] = None if self.ratio is None else round(self.ratio, 4)
        doc["result"] = {True: "pass", False: "MISS", None: "reported"}[self.passed]
        return doc


def fmt(value: Optional[float], unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "s" and abs(value) < 1:
        value, unit = value * 1000, "ms"
    if value == 0 or 0.01 <= abs(value) < 10_000:
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()


# --------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, `inclusive`)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * p / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# --------------------------------------------------------------------------- /proc


def rss_bytes(pid: int) -> int:
    """VmRSS of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --------------------------------------------------------------------------- processes


def cli_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The environment a user's shell would give the CLI, without this session's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATOMSYNC_", "NOTIFY_"))}
    env.pop("JOURNAL_STREAM", None)
    env.update(extra or {})
    return env


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.005
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


class Daemon:
    """`atomsync -c CONFIG run` in the background; its output goes to files in `workdir`."""

    def __init__(self, config: Path, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.out: IO[str] = open(workdir / "daemon.out", "w")  # noqa: SIM115 - closed in stop()
        self.err: IO[str] = open(workdir / "daemon.err", "w")  # noqa: SIM115
        self.err_path = workdir / "daemon.err"
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "atomsync", "-c", str(config), "run"],
            stdout=self.out,
            stderr=self.err,
            env=cli_env(),
            cwd=ROOT,
        )
        self.pid = self.proc.pid

    def running(self) -> bool:
        """True while the daemon runs; its exit is an error, with the end of its log."""
        if self.proc.poll() is not None:
            tail = self.err_path.read_text()[-2000:]
            raise RuntimeError(f"atomsync run exited with {self.proc.returncode}:\n{tail}")
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.out.close()
        self.err.close()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RequestCounter:
    """Counts the HCM simulator's feed requests as they arrive (monotonic arrival times)."""

    def __init__(self, hcm: HcmSimulator) -> None:
        self.lock = threading.Lock()
        self.arrivals: list[tuple[float, str]] = []
        hcm.on_request = self._seen

    def _seen(self, record: RequestRecord) -> None:
        with self.lock:
            self.arrivals.append((time.monotonic(), record.path))

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)


# A bare `requests` client for baselines: one keep-alive Session, Basic auth, the same URL and
# query the daemon sends. It reports its own CPU time (from /proc, like the daemon's) and the
# wall time of every request.
BARE_CLIENT = r"""
import json, os, sys, time
import requests

args = json.loads(sys.stdin.read())

def cpu():
    fields = open("/proc/self/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

session = requests.Session()
session.auth = (args["user"], args["password"])
for _ in range(args["warmup"]):
    session.get(args["url"], params=args["query"], timeout=30).content
walls = []
start = cpu()
slot = time.monotonic()
for _ in range(args["n"]):
    if args["interval"]:  # the daemon's fixed-rate schedule: start a request every interval
        slot += args["interval"]
        time.sleep(max(0.0, slot - time.monotonic()))
    t = time.perf_counter()
    resp = session.get(args["url"], params=args["query"], timeout=30)
    resp.content
    walls.append(time.perf_counter() - t)
    assert resp.status_code == 200, resp.status_code
print(json.dumps({"cpu": cpu() - start, "walls": walls}))
"""


def bare_client(
    url: str,
    query: dict[str, str],
    user: str,
    password: str,
    n: int,
    *,
    interval: float = 0.0,
    warmup: int = 5,
) -> dict[str, Any]:
    args = {
        "url": url,
        "query": query,
        "user": user,
        "password": password,
        "n": n,
        "interval": interval,
        "warmup": warmup,
    }
    out = subprocess.run(
        [PYTHON, "-c", BARE_CLIENT],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=ROOT,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result
