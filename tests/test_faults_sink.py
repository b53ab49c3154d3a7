"""Sink faults end to end: the real CLI in a subprocess, both simulators, the real oci signer.

What a user sees and what the protocol guarantees when OCI Notifications misbehaves:
retryable faults (429, 5xx, resets, timeouts) are retried and skip nothing; set-up faults
(401, clock skew, unknown topic) keep the watermark and are never dead-lettered; permanent
rejections go to the dead-letter file (or halt the feed); pacing stays under the topic's
rate. No output of any of these runs may contain the HCM password or the private key.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from atomsync.errors import EXIT_CONFIG
from atomsync.sim.hcmdata import SimEntry
from atomsync.sim.keys import KEY_FILE_NAME
from atomsync.sim.ons import OnsSimulator
from atomsync.sim.sandbox import PASSWORD, Sandbox
from atomsync.timeutil import format_ms, parse_timestamp
from tests.conftest import Daemon, atomsync, entry_keys, published_keys, wait_until

pytestmark = pytest.mark.slow

FEED = "newhire"
ATTEMPTS = 3  # RetryingSink's attempts per event within one cycle
FAILED = f"{FEED}: cycle failed: "
UNKNOWN_TOPIC = "ocid1.onstopic.oc1.iad.aaaaaaaanosuchtopicanywhere"


# --------------------------------------------------------------------------- helpers


class Cli:
    """Runs the CLI and keeps every output, so the secrets check can read them all."""

    def __init__(self) -> None:
        self.runs: list[subprocess.CompletedProcess[str]] = []

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = atomsync(*args, timeout=timeout)
        self.runs.append(result)
        return result


@pytest.fixture
def cli() -> Cli:
    return Cli()


def key_of(entry: SimEntry) -> str:
    return f"{entry.id}@{format_ms(entry.updated_ms)}"


def state_path(box: Sandbox) -> Path:
    return box.dir / "state" / f"{FEED}.state.json"


def dead_letter_path(box: Sandbox) -> Path:
    return box.dir / "state" / "deadletter.jsonl"


def read_state(box: Sandbox) -> Optional[dict[str, Any]]:
    try:
        doc: dict[str, Any] = json.loads(state_path(box).read_bytes())
    except FileNotFoundError:
        return None
    return doc


def dead_letters(box: Sandbox) -> list[dict[str, Any]]:
    try:
        text = dead_letter_path(box).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check_nothing_skipped(box: Sandbox) -> Optional[dict[str, Any]]:
    """The watermark never passes an unpublished event.

    The state is read first and the simulator's record second: the record only grows, so
    every key the state holds, and every entry at or behind its watermark, must be in it.
    """
    doc = read_state(box)
    if doc is None:
        return None
    accepted = set(published_keys(box))
    recorded = set(doc["keys"])
    assert recorded <= accepted, f"state records unpublished events: {recorded - accepted}"
    if doc["watermark"] is not None:
        mark = parse_timestamp(doc["watermark"])
        behind = {key_of(e) for e in box.hcm.entries(FEED) if e.updated_ms <= mark}
        assert behind <= accepted, (
            f"watermark {doc['watermark']} passed unpublished events: {behind - accepted}"
        )
    return doc


def failure_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if FAILED in line]


def watermark_in(line: str) -> str:
    found = re.search(r"watermark stays at (\S+);", line)
    assert found, line
    return found.group(1)


def stop(daemon: Daemon) -> str:
    code, _ = daemon.terminate(signal.SIGTERM)
    err = daemon.stderr()
    assert code == 0, err
    assert "stopped" in err
    return err


def pem_body_lines(box: Sandbox) -> list[str]:
    assert box.key is not None
    lines = box.key.private_pem.decode("ascii").strip().splitlines()
    assert lines[0].startswith("-----BEGIN") and lines[-1].startswith("-----END")
    return [line for line in lines[1:-1] if line]


def assert_no_secrets(box: Sandbox, root: Path, cli: Cli, *texts: str) -> list[Path]:
    """No output of the test (files under `root` except the inputs that hold the secrets
    on purpose, every CLI output, and `texts`: the stderr of daemons whose file a later
    daemon replaced) contains the HCM password or a line of the PEM body."""
    body = pem_body_lines(box)
    secrets = [PASSWORD, *body, "".join(body)]
    # The check itself must be able to see them: the key file holds every line.
    key_text = (box.dir / KEY_FILE_NAME).read_text()
    assert all(line in key_text for line in body)
    inputs = {(box.dir / KEY_FILE_NAME).resolve(), (box.dir / "hcm_password").resolve()}
    scanned = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.resolve() in inputs:
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        for secret in secrets:
            assert secret not in text, f"{path} contains a secret"
        scanned.append(path)
    for run in cli.runs:
        for secret in secrets:
            assert secret not in run.stdout and secret not in run.stderr, run.args
    for text in texts:
        for secret in secrets:
            assert secret not in text, "a daemon's output contains a secret"
    return scanned


# --------------------------------------------------------------------------- 1. retryable


RETRYABLE = [
    pytest.param("429", {"retry_after": 1}, "429 TooManyRequests", id="429-retry-after"),
    pytest.param("500", {}, "500 InternalServerError", id="500"),
    pytest.param("502", {}, "502 BadGateway", id="502"),
    pytest.param("503", {}, "503 ServiceUnavailable", id="503"),
    pytest.param("reset", {}, "failed before an answer: Connection reset by peer", id="reset"),
    pytest.param("slow", {"delay": 1.5}, "did not answer within 0.5 s", id="timeout"),
]


@pytest.mark.parametrize(("fault", "params", "cause"), RETRYABLE)
def test_retryable_fault_mid_backlog_is_retried_and_skips_nothing(
    sandbox: Sandbox,
    daemon_factory: Callable[..., Daemon],
    cli: Cli,
    tmp_path: Path,
    fault: str,
    params: dict[str, Any],
    cause: str,
) -> None:
    backlog = 30
    retry_after = float(params.get("retry_after", 0))
    sandbox.hcm.add_hires(backlog, updated_ms=sandbox.hcm.now_ms() - 60_000, spacing_ms=10)
    config = sandbox.write_config(
        # The back-off ceiling also caps the in-cycle waits; it must not cap Retry-After.
        poll={"interval_seconds": 0.5, "backoff_max_seconds": max(0.5, retry_after)},
        publisher={
            "max_messages_per_minute": 1200,  # 20/s: the backlog lasts long enough to hit
            "timeout_seconds": 0.5 if fault == "slow" else 20,
        },
    )
    daemon = daemon_factory(config)
    wait_until(lambda: len(sandbox.ons.accepted) >= 5, what="the backlog to be under way")
    # As many faults as one cycle's attempts: exactly one cycle fails, the next recovers.
    sandbox.ons.inject(fault, times=ATTEMPTS, **params)
    expected = entry_keys(sandbox)
    assert len(expected) == backlog

    checks_while_faulted = 0
    stays_at: Optional[str] = None
    before_retry = 0
    deadline = time.monotonic() + 30
    while True:
        doc = check_nothing_skipped(sandbox)
        accepted = sandbox.ons.accepted  # read after the state: see check_nothing_skipped
        lines = failure_lines(daemon.stderr())
        if lines and stays_at is None:
            stays_at = watermark_in(lines[0])
            # What had arrived when the cycle gave up; its next try waits >= 0.25 s more.
            logged = parse_timestamp(lines[0].split()[0]) / 1000
            before_retry = sum(1 for m in accepted if m.received_at < logged + 0.1)
        backing_off = stays_at is not None and len(accepted) == before_retry
        if sandbox.ons.pending_faults() or backing_off:
            checks_while_faulted += 1
            if backing_off and doc is not None:
                assert doc["watermark"] == stays_at  # the log line tells the truth
        if lines and set(published_keys(sandbox)) >= expected:
            break
        assert time.monotonic() < deadline, f"not recovered: {daemon.stderr()[-2000:]}"
        time.sleep(0.05)
    assert checks_while_faulted >= 3
    if fault == "slow":
        time.sleep(params["delay"])  # let the simulator finish the replies it was holding back
    check_nothing_skipped(sandbox)
    err = stop(daemon)

    # One clear line for the one failed cycle, naming the feed and the cause.
    lines = failure_lines(err)
    assert len(lines) == 1, err
    assert cause in lines[0] and "watermark stays at " in lines[0] and "next try in" in lines[0]
    retries = [line for line in err.splitlines() if "; retrying " in line]
    assert len(retries) == ATTEMPTS - 1, err
    assert all(cause in line for line in retries)
    # The event retried is the one right after the watermark the failure line names.
    assert stays_at is not None
    mark = parse_timestamp(stays_at)
    failed = min(
        (e for e in sandbox.hcm.entries(FEED) if e.updated_ms > mark),
        key=lambda e: (e.updated_ms, e.id),
    )
    assert all(f"; retrying {failed.id} in " in line for line in retries), retries

    keys = published_keys(sandbox)
    assert set(keys) == expected  # every entry arrived
    if fault == "slow":
        # The documented duplicate window: the service may accept what timed out.
        timed_out = [line for line in err.splitlines() if "did not answer within" in line]
        assert len(timed_out) == ATTEMPTS
        assert len(keys) - len(expected) <= len(timed_out)
        assert sandbox.ons.rejected == []
    else:
        assert len(keys) == len(expected), "duplicates without a reason"
        statuses = {r.status for r in sandbox.ons.rejected}
        assert len(sandbox.ons.rejected) == ATTEMPTS
        assert statuses == ({0} if fault == "reset" else {int(fault)})

    if fault == "429":
        # Retry-After is honoured: nothing reaches the topic sooner after a 429.
        arrivals = sorted(
            [m.received_at for m in sandbox.ons.accepted]
            + [r.received_at for r in sandbox.ons.rejected]
        )
        for throttled in sandbox.ons.rejected:
            later = [t for t in arrivals if t > throttled.received_at]
            assert later, "no retry after a 429"
            assert later[0] - throttled.received_at >= retry_after - 0.005, (
                f"retried {later[0] - throttled.received_at:.3f} s after a 429 that asked "
                f"for {retry_after:g} s"
            )

    assert not dead_letter_path(sandbox).exists()
    status = cli("-c", str(config), "status", "--json")
    feed = json.loads(status.stdout)["feeds"][FEED]
    assert feed["published"] == backlog and feed["dead_letters"] == 0
    scanned = assert_no_secrets(sandbox, tmp_path, cli)
    assert tmp_path / "daemon.err" in scanned and state_path(sandbox) in scanned


# --------------------------------------------------------------------------- 2. set-up faults


@pytest.fixture
def skewable(tmp_path: Path) -> Iterator[tuple[Sandbox, list[float]]]:
    """A sandbox whose ONS simulator's clock runs `offset[0]` seconds ahead of this machine."""
    offset = [0.0]
    box = Sandbox(tmp_path / "sandbox")
    box.ons = OnsSimulator(clock=lambda: time.time() + offset[0])
    with box:
        yield box, offset


CONFIG_LEVEL = [
    pytest.param(
        "401",
        ["401 NotAuthenticated", "check user, tenancy, fingerprint and key_file in the OCI config"],
        id="401-injected",
    ),
    pytest.param(
        "skew",
        ["401 NotAuthenticated", "clock skew", "clock is off by more than 5 minutes"],
        id="401-clock-skew",
    ),
    pytest.param(
        "404",
        ["404 NotAuthorizedOrNotFound", UNKNOWN_TOPIC, "policy allows 'use ons-topics'"],
        id="404-unknown-topic",
    ),
]


@pytest.mark.parametrize(("mode", "words"), CONFIG_LEVEL)
def test_setup_fault_keeps_the_watermark_and_is_never_dead_lettered(
    skewable: tuple[Sandbox, list[float]],
    daemon_factory: Callable[..., Daemon],
    cli: Cli,
    tmp_path: Path,
    mode: str,
    words: list[str],
) -> None:
    box, offset = skewable
    poll = {"interval_seconds": 0.5, "backoff_max_seconds": 0.5}
    first = box.hcm.add_hires(3, updated_ms=box.hcm.now_ms() - 60_000, spacing_ms=10)
    good = box.write_config(poll=poll)
    daemon = daemon_factory(good)
    before = format_ms(first[-1].updated_ms)
    # The state is saved just after the simulator accepts: wait for the state, not the sim.
    wait_until(
        lambda: (read_state(box) or {}).get("watermark") == before, what="the first three events"
    )
    assert len(box.ons.accepted) == 3
    errors = ""

    if mode == "404":
        errors += stop(daemon)
        bad = box.write_config(
            box.dir / "bad-topic.yaml", poll=poll, publisher={"topic_id": UNKNOWN_TOPIC}
        )
        daemon = daemon_factory(bad)
    elif mode == "401":
        box.ons.inject("401", times=4)
    else:
        offset[0] = 600.0  # the service's clock is 10 minutes ahead of this machine
    later = box.hcm.add_hires(3, updated_ms=box.hcm.now_ms() - 30_000, spacing_ms=10)
    saved = state_path(box).read_bytes()

    def failing_cycles(n: int) -> bool:
        # While the fault lasts, nothing moves: not the state, not the simulator's record.
        assert state_path(box).read_bytes() == saved
        assert len(box.ons.accepted) == 3
        return len(failure_lines(daemon.stderr())) >= n

    wait_until(lambda: failing_cycles(3), what="three failed cycles")
    assert not dead_letter_path(box).exists()

    if mode == "404":
        errors += stop(daemon)
        daemon = daemon_factory(good)  # the topic fixed in the configuration, restarted
    elif mode == "skew":
        offset[0] = 0.0  # the clock fixed (chrony caught up)
    # (an injected 401 runs out by itself)
    wait_until(lambda: len(box.ons.accepted) == 6, what="everything after the fix")
    errors += stop(daemon)

    lines = failure_lines(errors)
    assert len(lines) >= 3, errors
    for line in lines:
        assert " ERROR " in line  # a set-up problem needs a person: an error, not a warning
        assert watermark_in(line) == before
        for word in words:
            assert word in line, line
    if mode == "401":
        assert len(lines) == 4  # one per failed cycle, no in-cycle retries of a 401
    assert "; retrying " not in errors
    assert "dead-letter" not in errors and not dead_letter_path(box).exists()
    keys = published_keys(box)
    assert sorted(keys) == sorted(key_of(e) for e in [*first, *later])
    assert read_state(box)["watermark"] == format_ms(later[-1].updated_ms)  # type: ignore[index]
    status = json.loads(cli("-c", str(good), "status", "--json").stdout)["feeds"][FEED]
    assert status["dead_letters"] == 0 and status["published"] == 6
    assert_no_secrets(box, tmp_path, cli, errors)


# --------------------------------------------------------------------------- 3. permanent


def rejected_entry(box: Sandbox, cause: str, updated_ms: int) -> tuple[SimEntry, str]:
    """An entry the sink will refuse for good, and the words the refusal carries."""
    entry = box.hcm.make_entry(FEED, updated_ms=updated_ms)
    if cause == "injected-400":
        box.ons.inject("400")
        return entry, "400 InvalidParameter: injected fault 400"
    if cause == "service-size-limit":
        # Fits atomsync's 60,000-byte budget, but this service takes only 10,000.
        entry.summary = "S" * 20_000
        box.ons.max_message_bytes = 10_000
        return entry, "exceeds the maximum of 10000 bytes"
    # Too large even after trimming: the summary is never trimmed.
    entry.summary = "S" * 70_000
    return entry, "even after trimming"


PERMANENT = ["injected-400", "service-size-limit", "too-large-after-trimming"]


@pytest.mark.parametrize("cause", PERMANENT)
def test_permanent_rejection_is_dead_lettered_and_the_feed_moves_on(
    sandbox: Sandbox, cli: Cli, tmp_path: Path, cause: str
) -> None:
    now = sandbox.hcm.now_ms()
    first = sandbox.hcm.add_hires(2, updated_ms=now - 60_000, spacing_ms=10)
    config = str(sandbox.write_config())
    assert cli("-c", config, "once").returncode == 0
    target, reason = rejected_entry(sandbox, cause, now - 50_000)
    sandbox.hcm.add(target)
    after = sandbox.hcm.add_hires(2, updated_ms=now - 40_000, spacing_ms=10)

    run = cli("-c", config, "once")
    assert run.returncode == 1, run.stderr  # the feed moved on, but this event was not published
    assert f"{target.id} rejected for good, written to the dead-letter file" in run.stderr
    assert reason in run.stderr
    # The feed moved on: later events published, the watermark past the rejected one.
    keys = published_keys(sandbox)
    assert sorted(keys) == sorted(key_of(e) for e in [*first, *after])
    state = read_state(sandbox)
    assert state is not None
    assert state["watermark"] == format_ms(after[-1].updated_ms)
    assert key_of(target) in state["keys"]
    letters = dead_letters(sandbox)
    assert [(d["id"], d["key"], d["feed"]) for d in letters] == [(target.id, key_of(target), FEED)]
    assert reason in letters[0]["reason"]
    assert letters[0]["body"]["summary"] == target.summary  # kept whole, for inspection

    listed = cli("-c", config, "deadletter", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("\n") == 1  # one line per dead letter, and nothing else
    assert listed.stdout.split("\t")[2] == target.id
    status = json.loads(cli("-c", config, "status", "--json").stdout)["feeds"][FEED]
    assert status["dead_letters"] == 1 and status["published"] == 4

    # A retry that still fails keeps the letter and says so with exit 1.
    if cause == "injected-400":
        sandbox.ons.inject("400")
    again = cli("-c", config, "deadletter", "retry")
    assert again.returncode == 1, again.stderr
    assert again.stdout.strip() == "re-sent 0, still dead-lettered 1"
    assert f"{target.id} still refused" in again.stderr
    assert [d["id"] for d in dead_letters(sandbox)] == [target.id]
    assert len(sandbox.ons.accepted) == 4

    if cause == "too-large-after-trimming":
        assert_no_secrets(sandbox, tmp_path, cli)
        return  # nothing can make it fit; it stays for a person to deal with

    if cause == "injected-400":
        # A retry that cannot even build its sink (the OCI key set-up is gone) changes nothing.
        broken = sandbox.write_config(
            sandbox.dir / "broken.yaml",
            publisher={"oci_config_file": str(sandbox.dir / "missing-oci-config")},
        )
        failed = cli("-c", str(broken), "deadletter", "retry")
        assert failed.returncode == EXIT_CONFIG, failed.stderr
        assert "missing-oci-config" in failed.stderr
        assert [d["id"] for d in dead_letters(sandbox)] == [target.id], "dead letters lost"
    else:
        sandbox.ons.max_message_bytes = 65_536
    sent = cli("-c", config, "deadletter", "retry")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "re-sent 1, still dead-lettered 0"
    assert dead_letter_path(sandbox).read_text() == ""
    assert published_keys(sandbox).count(key_of(target)) == 1
    assert cli("-c", config, "deadletter", "list").stdout == ""
    status = json.loads(cli("-c", config, "status", "--json").stdout)["feeds"][FEED]
    assert status["dead_letters"] == 0
    assert_no_secrets(sandbox, tmp_path, cli)


@pytest.mark.parametrize("cause", ["service-size-limit", "too-large-after-trimming"])
def test_halt_policy_stops_the_feed_at_the_rejected_event(
    sandbox: Sandbox,
    daemon_factory: Callable[..., Daemon],
    cli: Cli,
    tmp_path: Path,
    cause: str,
) -> None:
    now = sandbox.hcm.now_ms()
    first = sandbox.hcm.add_hires(2, updated_ms=now - 60_000, spacing_ms=10)
    target, reason = rejected_entry(sandbox, cause, now - 50_000)
    sandbox.hcm.add(target)
    sandbox.hcm.add_hires(2, updated_ms=now - 40_000, spacing_ms=10)
    config = sandbox.write_config(
        poll={"interval_seconds": 0.5, "backoff_max_seconds": 0.5},
        publisher={"on_permanent_failure": "halt"},
    )
    daemon = daemon_factory(config)
    wait_until(lambda: len(failure_lines(daemon.stderr())) >= 3, what="three failed cycles")
    check_nothing_skipped(sandbox)
    err = stop(daemon)

    assert sorted(published_keys(sandbox)) == sorted(key_of(e) for e in first)
    assert read_state(sandbox)["watermark"] == format_ms(first[-1].updated_ms)  # type: ignore[index]
    assert not dead_letter_path(sandbox).exists() and "dead-letter" not in err
    lines = failure_lines(err)
    for line in lines:
        assert f"{target.id} rejected: " in line and reason in line, line
        assert watermark_in(line) == format_ms(first[-1].updated_ms)
    # Logged on every cycle: each cycle reads the feed once (five entries: one short page).
    cycles = [r for r in sandbox.hcm.requests if r.path.endswith(f"/employee/{FEED}")]
    assert len(lines) <= len(cycles) <= len(lines) + 1  # + a cycle cut short by the stop
    status = json.loads(cli("-c", str(config), "status", "--json").stdout)["feeds"][FEED]
    assert status["dead_letters"] == 0 and status["published"] == 2
    assert_no_secrets(sandbox, tmp_path, cli)


# --------------------------------------------------------------------------- 4. pacing


def test_pacing_keeps_a_300_event_backlog_under_the_topic_rate(
    tmp_path: Path, daemon_factory: Callable[..., Daemon], cli: Cli
) -> None:
    rate = 600
    with Sandbox(tmp_path / "sandbox", rate_per_minute=rate) as box:
        box.hcm.add_hires(300, updated_ms=box.hcm.now_ms() - 120_000, spacing_ms=10)
        config = box.write_config(
            hcm={"page_size": 100},
            poll={"interval_seconds": 1},
            publisher={"max_messages_per_minute": rate},
        )
        daemon = daemon_factory(config)
        box.ons.wait_for(300, timeout=60)
        stop(daemon)
        accepted = box.ons.accepted
        assert [r for r in box.ons.rejected if r.status == 429] == []
        assert box.ons.rejected == []
        assert sorted(published_keys(box)) == sorted(entry_keys(box))
        first, last = accepted[0].received_at, accepted[-1].received_at
        achieved = (len(accepted) - 1) / (last - first) * 60
        ratio = achieved / rate
        print(f"pacing: {len(accepted)} messages, {achieved:.1f}/min, {ratio:.3f} of {rate}/min")
        # At least 90 % of the rate, and never above it (a burst would cost 429s for real).
        assert 0.9 <= ratio <= 1.0
        assert_no_secrets(box, tmp_path, cli)
