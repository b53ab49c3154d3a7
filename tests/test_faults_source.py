"""Source-side faults, back-off, late-arrival sweeps and shutdown, end to end.

`atomsync run` in a subprocess against both simulators: HCM faults must fail the cycle with
one clear line, keep the watermark, never end the daemon, and lose nothing once they clear;
stops must end within `poll.shutdown_timeout_seconds` with the state saved.
"""

from __future__ import annotations

import json
import logging
import random
import re
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from atomsync import config as configuration
from atomsync.runner import Backoff
from atomsync.sim.sandbox import Sandbox
from atomsync.timeutil import format_ms
from tests.conftest import (
    Daemon,
    atomsync,
    entry_keys,
    published_keys,
    state_doc,
    state_file,
    wait_until,
    watermark,
)

pytestmark = pytest.mark.slow

FAILED = "newhire: cycle failed: "
NEXT_TRY = re.compile(r"; next try in (\d+\.\d) s")
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")
SUMMARY = re.compile(r"newhire: fetched \d+, published (\d+), skipped \d+.*\)")

# Words that must appear in the failure line of each HCM fault: the status or the cause,
# and where there is one, what to check.
FAULT_CAUSES: dict[str, tuple[str, ...]] = {
    "401": ("401", "credentials", "hcm.username"),
    "403": ("403", "role"),
    "404": ("404", "feed name"),
    "429": ("429", "throttling", "wait 0.5 s"),
    "500": ("500", "HCM's side"),
    "503": ("503", "HCM's side"),
    "slow": ("did not answer", "hcm.timeout_seconds"),
    "trickle": ("too slowly", "hcm.timeout_seconds"),
    "reset": ("dropped the connection",),
    "login_page": ("login page", "text/html"),
    "redirect_login": ("login page", "302", "login.example.com"),
    "truncated": ("not well-formed",),
    "wrong_content_type": ("not an Atom feed", "application/json"),
}
FAULT_PARAMS: dict[str, dict[str, float]] = {
    "429": {"retry_after": 0.5},
    "slow": {"delay": 1.5},  # longer than hcm.timeout_seconds: a read timeout
    "trickle": {"interval": 0.05},  # every read in time, the whole answer far too late
}
# Short read timeouts only where they are the fault: a loaded machine must not time out.
FAULT_HCM: dict[str, dict[str, float]] = {
    "slow": {"timeout_seconds": 0.6},
    "trickle": {"timeout_seconds": 0.4, "connect_timeout_seconds": 0.2},
}


# --------------------------------------------------------------------------- helpers


def failures(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if FAILED in line]


def next_tries(lines: list[str]) -> list[float]:
    out = []
    for line in lines:
        match = NEXT_TRY.search(line)
        assert match, line
        out.append(float(match.group(1)))
    return out


def logged_at(line: str) -> float:
    match = LOG_TIME.match(line)
    assert match, line
    stamp = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%f")
    return stamp.replace(tzinfo=timezone.utc).timestamp()


def key_of(entry: Any) -> str:
    return f"{entry.id}@{format_ms(entry.updated_ms)}"


def assert_all_published_once(box: Sandbox) -> None:
    keys = published_keys(box)
    assert len(keys) == len(set(keys)), "an event was published twice"
    assert set(keys) == entry_keys(box), "an event was lost"
    assert box.ons.rejected == []


def wait_all_published(box: Sandbox, timeout: float = 20) -> None:
    expected = entry_keys(box)
    wait_until(
        lambda: set(published_keys(box)) >= expected,
        timeout=timeout,
        what=f"all {len(expected)} entries published",
    )


def log_line_after(daemon: Daemon, marker: str, pattern: re.Pattern[str]) -> str:
    """The first line matching `pattern` at or after the first line containing `marker`."""

    def find() -> Optional[str]:
        lines = daemon.stderr().splitlines()
        at = next((i for i, line in enumerate(lines) if marker in line), None)
        if at is None:
            return None
        return next((line for line in lines[at:] if pattern.search(line)), None)

    found = wait_until(find, what=f"a line matching {pattern.pattern!r} after {marker!r}")
    assert isinstance(found, str)
    return found


def wait_watermark(box: Sandbox, value: str) -> None:
    # The state is saved just after the sink accepted the event: allow for that moment.
    wait_until(lambda: watermark(box) == value, what=f"the watermark to reach {value}")


def fast_config(box: Sandbox, **sections: Any) -> Path:
    poll = {"interval_seconds": 0.1, "backoff_max_seconds": 0.5, "sweep_interval_seconds": 0}
    poll.update(sections.pop("poll", {}))
    return box.write_config(poll=poll, **sections)


def stop(daemon: Daemon, within: float = 10) -> float:
    """SIGTERM; exit 0 within `within` s (default: the default shutdown bound)."""
    code, took = daemon.terminate(signal.SIGTERM, timeout=within + 20)
    assert code == 0, daemon.stderr()
    assert took < within, f"took {took:.1f} s to stop"
    return took


# --------------------------------------------------------------------------- 1. faults


@pytest.mark.parametrize("fault", sorted(FAULT_CAUSES))
def test_source_fault_fails_the_cycle_keeps_the_watermark_and_loses_nothing(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon], fault: str
) -> None:
    hcm = sandbox.hcm
    first = hcm.add_hires(3, updated_ms=hcm.now_ms() - 10_000, spacing_ms=10)
    config = fast_config(sandbox, hcm=FAULT_HCM.get(fault, {}))
    daemon = daemon_factory(config)
    wait_all_published(sandbox)
    w0 = format_ms(first[-1].updated_ms)
    wait_watermark(sandbox, w0)

    hcm.inject(fault, times=3, collection="newhire", **FAULT_PARAMS.get(fault, {}))
    # New entries arrive once the fault has begun, so no clean cycle can slip them through.
    wait_until(
        lambda: [f["times"] for f in hcm.pending_faults()] != [3], what="the first faulted request"
    )
    hcm.add_hires(2, spacing_ms=1)
    deadline = time.monotonic() + 30
    while len(failures(daemon.stderr())) < 3:
        assert watermark(sandbox) == w0, "the watermark moved during a failed cycle"
        assert daemon.proc.poll() is None, daemon.stderr()
        assert time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.02)
    assert watermark(sandbox) == w0

    wait_all_published(sandbox)
    assert_all_published_once(sandbox)
    wait_watermark(sandbox, max(format_ms(e.updated_ms) for e in hcm.entries("newhire")))
    assert daemon.proc.poll() is None, "run must outlive runtime faults"

    def faulted() -> int:  # a slow answer is recorded when it is finally sent
        return sum(r.fault == fault for r in hcm.requests)

    wait_until(lambda: faulted() >= 3, what="the faulted requests' records")
    lines = failures(daemon.stderr())
    assert faulted() == 3
    assert len(lines) == 3, "\n".join(lines)  # one line per failed cycle
    for line in lines:
        for word in FAULT_CAUSES[fault]:
            assert word in line, line
        assert f"; watermark stays at {w0}; next try in " in line, line
    assert sandbox.password not in daemon.stderr()
    stop(daemon)


def test_undecodable_content_is_published_raw_and_does_not_fail_the_cycle(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon]
) -> None:
    hcm = sandbox.hcm
    hcm.add_hires(2, updated_ms=hcm.now_ms() - 10_000, spacing_ms=10)
    daemon = daemon_factory(fast_config(sandbox))
    wait_all_published(sandbox)
    hcm.inject("bad_json", times=10_000, collection="newhire")  # every page while it lasts
    broken = hcm.add_hires(2, spacing_ms=1)
    wait_all_published(sandbox)
    hcm.clear_faults()
    assert_all_published_once(sandbox)  # re-read old entries with broken content: skipped

    wait_watermark(sandbox, format_ms(broken[-1].updated_ms))  # saved after the warning
    bodies = {json.loads(m.body)["id"]: json.loads(m.body) for m in sandbox.ons.accepted}
    for entry in hcm.entries("newhire"):
        body = bodies[entry.id]
        if entry in broken:
            assert body["content_parsed"] is False
            assert "not valid JSON" in body["content_error"]
            assert body["content_raw"] == entry.content.replace('"', "", 1)
            assert body["content_raw"].strip()
        else:
            assert body["content_parsed"] is True and "content_raw" not in body
    stderr = daemon.stderr()
    assert failures(stderr) == []
    for entry in broken:
        warned = [
            line
            for line in stderr.splitlines()
            if f"newhire: published {entry.id} with its raw content" in line
        ]
        assert len(warned) == 1 and "WARNING" in warned[0], stderr
    stop(daemon)


# --------------------------------------------------------------------------- 2. back-off


def test_backoff_grows_is_capped_resets_and_honours_retry_after(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon]
) -> None:
    hcm = sandbox.hcm
    base, cap = 0.2, 1.6  # ceilings 0.2, 0.4, 0.8, 1.6, 1.6, 1.6
    config = sandbox.write_config(
        poll={"interval_seconds": base, "backoff_max_seconds": cap, "sweep_interval_seconds": 0}
    )
    daemon = daemon_factory(config)
    wait_until(lambda: state_file(sandbox).exists(), what="the first cycle")

    # A long outage: six 500s in a row.
    hcm.inject("500", times=6, collection="newhire")
    wait_until(lambda: len(failures(daemon.stderr())) >= 6, timeout=30, what="six failures")
    lines = failures(daemon.stderr())
    tries = next_tries(lines)
    assert len(tries) == 6
    ceilings = [min(cap, base * 2**k) for k in range(6)]
    for value, ceiling in zip(tries, ceilings):  # jitter in [ceiling/2, ceiling], shown to 0.1
        assert ceiling / 2 - 0.05 <= value <= ceiling + 0.05, (tries, ceilings)
    assert tries[:4] == sorted(tries[:4]), tries  # doubling ceilings: never shorter
    assert tries[2] >= 2 * tries[0], tries  # at least doubled
    assert max(tries) <= cap, tries
    assert all(cap / 2 <= t for t in tries[3:]), tries
    for earlier, later, waited in zip(lines, lines[1:], tries):
        # The daemon really waits: the next failure comes no sooner than announced.
        assert logged_at(later) - logged_at(earlier) >= waited - 0.15, (earlier, later)

    # A success resets the back-off: the next failure starts small again.
    hcm.add_hires(1)
    wait_all_published(sandbox)
    hcm.inject("500", times=1, collection="newhire")
    wait_until(lambda: len(failures(daemon.stderr())) >= 7, what="the seventh failure")
    assert next_tries(failures(daemon.stderr()))[6] <= base + 0.05

    # Retry-After is honoured (above the jitter) ...
    hcm.add_hires(1)
    wait_all_published(sandbox)
    hcm.inject("429", times=1, collection="newhire", retry_after=1.5)
    wait_until(lambda: len(failures(daemon.stderr())) >= 8, what="a 429 failure")
    line = failures(daemon.stderr())[7]
    assert "429" in line and "wait 1.5 s" in line and line.endswith("next try in 1.5 s"), line
    hire = hcm.add_entry("newhire")
    wait_all_published(sandbox)
    retried = log_line_after(daemon, f"newhire: published {hire.id} ", re.compile(""))
    assert logged_at(retried) - logged_at(line) >= 1.4, (line, retried)

    # ... but never beyond poll.backoff_max_seconds.
    hcm.inject("429", times=1, collection="newhire", retry_after=30)
    wait_until(lambda: len(failures(daemon.stderr())) >= 9, what="a long 429")
    line = failures(daemon.stderr())[8]
    assert "wait 30 s" in line and line.endswith(f"next try in {cap:.1f} s"), line
    hcm.add_hires(1)
    wait_all_published(sandbox, timeout=15)  # well before the 30 s HCM asked for
    assert_all_published_once(sandbox)
    assert daemon.proc.poll() is None
    stop(daemon)


def test_backoff_unit_growth_cap_and_jitter_bounds() -> None:
    backoff = Backoff(1.0, 40.0, random.Random(7))
    delays = [backoff.failed(100.0) for _ in range(10)]
    ceilings = [min(40.0, 2.0**k) for k in range(10)]
    for delay, ceiling in zip(delays, ceilings):
        assert ceiling / 2 <= delay <= ceiling
    assert delays[:6] == sorted(delays[:6])  # 1, 2, 4, 8, 16, 32: each window above the last
    assert delays[2] >= 2 * delays[0]
    assert all(20.0 <= d <= 40.0 for d in delays[6:])  # capped
    assert backoff.failures == 10
    assert backoff.until == pytest.approx(100.0 + delays[-1])
    # The jitter really spreads (so restarted daemons do not retry in step), within bounds.
    firsts = [Backoff(2.0, 60.0, random.Random(seed)).failed(0.0) for seed in range(200)]
    assert all(1.0 <= d <= 2.0 for d in firsts)
    assert max(firsts) - min(firsts) > 0.8
    # Seeded: reproducible.
    again = Backoff(1.0, 40.0, random.Random(7))
    assert [again.failed(100.0) for _ in range(10)] == delays


def test_backoff_unit_ready_and_reset() -> None:
    backoff = Backoff(0.5, 10.0, random.Random(1))
    assert backoff.ready(0.0)
    for _ in range(5):
        delay = backoff.failed(50.0)
    assert not backoff.ready(50.0 + delay - 0.001)
    assert backoff.ready(50.0 + delay)
    backoff.succeeded()
    assert backoff.failures == 0 and backoff.ready(0.0)
    assert 0.25 <= backoff.failed(60.0) <= 0.5  # starts over from the base


def test_backoff_unit_retry_after() -> None:
    backoff = Backoff(1.0, 30.0, random.Random(3))
    assert backoff.failed(0.0, retry_after=12.0) == 12.0  # above the jitter: honoured
    assert backoff.until == 12.0
    assert backoff.failed(0.0, retry_after=600.0) == 30.0  # never beyond the cap
    backoff.succeeded()
    assert 0.5 <= backoff.failed(0.0, retry_after=0.1) <= 1.0  # below the jitter: jitter wins


# --------------------------------------------------------------------------- 3. sweeps


def test_late_entry_behind_the_watermark_is_published_once_by_a_sweep(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon]
) -> None:
    hcm = sandbox.hcm
    hcm.add_hires(3, updated_ms=hcm.now_ms() - 10_000, spacing_ms=10)
    config = fast_config(
        sandbox,
        poll={
            "interval_seconds": 0.3,
            "overlap_seconds": 5,
            "sweep_interval_seconds": 1,
            "sweep_lookback_seconds": 86400,
        },
    )
    daemon = daemon_factory(config)
    wait_all_published(sandbox)
    mark = max(e.updated_ms for e in hcm.entries("newhire"))
    late = hcm.add_entry("newhire", updated_ms=mark - 3 * 3600 * 1000)
    wait_all_published(sandbox)

    def sweeps() -> list[str]:
        return [line for line in daemon.stderr().splitlines() if "sweep)" in line]

    # The cycle that published it is a sweep: the 5 s overlap cannot reach 3 hours back.
    summary = log_line_after(daemon, f"newhire: published {late.id} ", SUMMARY)
    assert "sweep)" in summary and "published 1," in summary, summary
    seen = len(sweeps())
    wait_until(lambda: len(sweeps()) >= seen + 2, what="two more sweeps")
    assert published_keys(sandbox).count(key_of(late)) == 1
    assert_all_published_once(sandbox)
    assert watermark(sandbox) == format_ms(mark)  # a late entry never moves it back
    assert failures(daemon.stderr()) == []
    stop(daemon)


def test_first_cycle_of_run_is_a_sweep_catching_up_after_downtime(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon]
) -> None:
    hcm = sandbox.hcm
    hcm.add_hires(2, updated_ms=hcm.now_ms() - 10_000, spacing_ms=10)
    poll = {
        "interval_seconds": 0.3,
        "overlap_seconds": 5,
        "sweep_interval_seconds": 3600,
        "sweep_lookback_seconds": 86400,
    }
    config = fast_config(sandbox, poll=poll)
    daemon = daemon_factory(config)
    wait_all_published(sandbox)
    stop(daemon)
    mark = max(e.updated_ms for e in hcm.entries("newhire"))
    late = hcm.add_entry("newhire", updated_ms=mark - 3 * 3600 * 1000)  # while it was down

    hcm.clear_requests()
    daemon = daemon_factory(config)
    wait_all_published(sandbox)
    # The restarted daemon's very first request reads a day back, not 5 s.
    assert hcm.requests[0].query["updated-min"] == format_ms(mark - 86400 * 1000)
    first = log_line_after(daemon, "", SUMMARY)
    assert "sweep)" in first and "published 1," in first, daemon.stderr()
    assert published_keys(sandbox).count(key_of(late)) == 1
    assert_all_published_once(sandbox)
    stop(daemon)


def test_catch_up_sweep_is_not_lost_when_the_first_cycle_fails(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon]
) -> None:
    hcm = sandbox.hcm
    hcm.add_hires(2, updated_ms=hcm.now_ms() - 10_000, spacing_ms=10)
    poll = {"interval_seconds": 0.2, "overlap_seconds": 5, "sweep_interval_seconds": 3600}
    config = fast_config(sandbox, poll=poll)
    assert atomsync("-c", str(config), "once").returncode == 0
    mark = max(e.updated_ms for e in hcm.entries("newhire"))
    late = hcm.add_entry("newhire", updated_ms=mark - 3 * 3600 * 1000)  # while it was down
    hcm.inject("503", times=1, collection="newhire")  # HCM still in maintenance at start

    daemon = daemon_factory(config)
    wait_until(lambda: failures(daemon.stderr()), what="the failed first cycle")
    fresh = hcm.add_entry("newhire")
    wait_until(lambda: key_of(fresh) in published_keys(sandbox), what="a successful cycle")
    assert published_keys(sandbox).count(key_of(late)) == 1, daemon.stderr()
    stop(daemon)


# --------------------------------------------------------------------------- 4. shutdown


def test_sigterm_while_sleeping_between_cycles_exits_at_once(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon]
) -> None:
    hcm = sandbox.hcm
    hcm.add_hires(3, updated_ms=hcm.now_ms() - 10_000, spacing_ms=10)
    config = sandbox.write_config(poll={"interval_seconds": 30})
    daemon = daemon_factory(config)
    wait_all_published(sandbox)
    wait_until(lambda: SUMMARY.search(daemon.stderr()), what="the end of the first cycle")
    stop(daemon, within=5)  # the 30 s wait between cycles must not delay a stop
    assert "stopped" in daemon.stderr()
    assert watermark(sandbox) == max(format_ms(e.updated_ms) for e in hcm.entries("newhire"))
    hcm.add_hires(2, spacing_ms=1)
    result = atomsync("-c", str(config), "once")
    assert result.returncode == 0, result.stderr
    assert_all_published_once(sandbox)


def test_sigterm_during_a_publish_finishes_and_saves_that_event(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon]
) -> None:
    hcm = sandbox.hcm
    config = fast_config(sandbox, publisher={"timeout_seconds": 10})
    daemon = daemon_factory(config)
    wait_until(lambda: state_file(sandbox).exists(), what="the first cycle")
    sandbox.ons.inject("slow", delay=2)
    hires = hcm.add_hires(3, spacing_ms=10)
    wait_until(lambda: not sandbox.ons.pending_faults(), what="the slow publish to begin")
    assert sandbox.ons.accepted == []
    stop(daemon)

    first = hires[0]
    assert published_keys(sandbox) == [key_of(first)]  # finished, and nothing after it
    doc = state_doc(sandbox)
    assert doc["watermark"] == format_ms(first.updated_ms)
    assert key_of(first) in doc["keys"] and doc["published"] == 1
    result = atomsync("-c", str(config), "once")
    assert result.returncode == 0, result.stderr
    assert published_keys(sandbox).count(key_of(first)) == 1  # no duplicate
    assert_all_published_once(sandbox)


def test_sigterm_during_a_hung_hcm_request_gives_up_after_the_bound(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon]
) -> None:
    hcm = sandbox.hcm
    hcm.add_hires(2, updated_ms=hcm.now_ms() - 10_000, spacing_ms=10)
    config = fast_config(sandbox, hcm={"timeout_seconds": 60}, poll={"shutdown_timeout_seconds": 2})
    daemon = daemon_factory(config)
    wait_all_published(sandbox)
    wait_watermark(sandbox, max(format_ms(e.updated_ms) for e in hcm.entries("newhire")))
    before = state_doc(sandbox)
    hcm.inject("slow", delay=60, collection="newhire")
    hcm.add_hires(2, spacing_ms=1)
    wait_until(lambda: not hcm.pending_faults(), what="the hung request")
    stop(daemon, within=8)  # poll.shutdown_timeout_seconds 2, and a margin
    assert "stopping without waiting any longer (2 s)" in daemon.stderr()
    assert state_doc(sandbox) == before  # whole, valid JSON, nothing half-done
    hcm.clear_faults()
    result = atomsync("-c", str(config), "once")
    assert result.returncode == 0, result.stderr
    assert_all_published_once(sandbox)
    assert len(sandbox.ons.accepted) == 4


def test_shutdown_bound_defaults_to_10_seconds(sandbox: Sandbox) -> None:
    cfg = configuration.load(sandbox.write_config(), env={})
    assert cfg.poll.shutdown_timeout_seconds == 10
    cfg = configuration.load(sandbox.write_config(poll={"shutdown_timeout_seconds": 2.5}), env={})
    assert cfg.poll.shutdown_timeout_seconds == 2.5


# --------------------------------------------------------------------------- 5. never exits


def test_run_outlives_ten_failed_cycles_and_status_shows_them(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon]
) -> None:
    hcm = sandbox.hcm
    config = fast_config(sandbox, poll={"interval_seconds": 0.1, "backoff_max_seconds": 0.2})
    daemon = daemon_factory(config)
    wait_until(lambda: state_file(sandbox).exists(), what="the first cycle")
    hcm.inject("500", times=10_000, collection="newhire")

    def beat_failures() -> int:
        try:
            doc = json.loads((sandbox.dir / "state" / "status.json").read_text())
        except (OSError, ValueError):
            return 0
        return int(doc["feeds"].get("newhire", {}).get("consecutive_failures", 0))

    wait_until(lambda: beat_failures() >= 10, timeout=30, what="ten failed cycles")
    assert daemon.proc.poll() is None, daemon.stderr()
    result = atomsync("-c", str(config), "status", "--json")
    assert result.returncode == 0, result.stderr
    feed = json.loads(result.stdout)["feeds"]["newhire"]
    assert feed["consecutive_failures"] >= 10
    assert "HCM answered 500" in feed["last_error"]
    assert len(failures(daemon.stderr())) >= 10

    hcm.clear_faults()
    hcm.add_hires(1)
    wait_all_published(sandbox)
    wait_until(lambda: beat_failures() == 0, what="the failure count to reset")
    feed = json.loads(atomsync("-c", str(config), "status", "--json").stdout)["feeds"]["newhire"]
    assert feed["consecutive_failures"] == 0 and feed["last_error"] is None
    stop(daemon)


# --------------------------------------------------------------------------- logging on stop


def test_event_finished_during_a_stop_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    from atomsync.config import FeedConfig
    from atomsync.state import FeedState, MemoryStore
    from atomsync.sync import CycleOptions, run_cycle
    from tests.fakes import Clock, FakeHcm, RecordingSink, entry

    t0 = 1_709_543_722_000
    hcm, sink, store = FakeHcm(), RecordingSink(), MemoryStore()
    hcm.add(*(entry(f"e{i}", t0 + i) for i in range(3)))
    caplog.set_level(logging.INFO, logger="atomsync.sync")
    result = run_cycle(
        FeedConfig("newhire", "newhire", "employee", "/hcmRestApi/atomservlet/employee/newhire"),
        FeedState("updated"),
        source=hcm,
        sink=sink,
        store=store,
        clock=Clock(t0 + 60_000),
        opts=CycleOptions(page_size=25, overlap_ms=300_000, retention_ms=4_000_000),
        should_stop=lambda: bool(sink.accepted),  # SIGTERM arrives during the first publish
    )
    assert result.stopped and sink.ids() == ["e0"]
    assert store.states["newhire"].seen(f"e0@{format_ms(t0)}")
    assert any(r.getMessage().startswith("newhire: published e0 ") for r in caplog.records)
