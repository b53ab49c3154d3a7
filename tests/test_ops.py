"""Running as a service: sd_notify, JSON logs, Prometheus metrics, health, log files."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from atomsync.sim.sandbox import Sandbox
from tests.conftest import Daemon, atomsync, wait_until

pytestmark = pytest.mark.slow


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket, here with timestamps."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.running = True
        self.thread = threading.Thread(target=self.collect, daemon=True)
        self.thread.start()

    def collect(self) -> None:
        while self.running:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            for line in data.decode().split("\n"):
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, m) for t, m in self.messages if m.startswith(prefix)]

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, NotifySocket]]:
    if request.param == "path":
        env_value = str(tmp_path / "notify.sock")
        address = env_value
    else:
        name = f"atomsync-test-{os.getpid()}-{time.monotonic_ns()}"
        env_value, address = "@" + name, "\0" + name
    sock = NotifySocket(address)
    yield env_value, sock
    sock.close()


def test_ready_watchdog_status_and_stopping_while_run_works(
    sandbox: Sandbox,
    notify_socket: tuple[str, NotifySocket],
    daemon_factory: Callable[..., Daemon],
) -> None:
    env_value, sock = notify_socket
    config = sandbox.write_config(poll={"interval_seconds": 1})
    watchdog_usec = 2_000_000
    daemon = daemon_factory(
        config, env={"NOTIFY_SOCKET": env_value, "WATCHDOG_USEC": str(watchdog_usec)}
    )
    wait_until(lambda: sock.lines("READY=1"), what="READY=1")
    sandbox.hcm.add_hires(3, spacing_ms=1)
    wait_until(lambda: len(sandbox.ons.accepted) == 3, what="3 messages")
    wait_until(lambda: len(sock.lines("WATCHDOG=1")) >= 8, timeout=15, what="watchdog pings")
    code, _ = daemon.terminate(signal.SIGTERM)
    assert code == 0, daemon.stderr()
    ready = sock.lines("READY=1")
    assert len(ready) == 1
    pings = [t for t, _ in sock.lines("WATCHDOG=1") if t > ready[0][0]]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    # systemd kills a service whose pings are further apart than WatchdogSec.
    assert max(gaps) < watchdog_usec / 1e6, gaps
    statuses = [m for _, m in sock.lines("STATUS=")]
    assert any(
        s.startswith("STATUS=ok; last success 20") and "3 published" in s for s in statuses
    ), statuses
    stopping = sock.lines("STOPPING=1")
    assert len(stopping) == 1 and stopping[0][0] > ready[0][0]


def test_ready_comes_before_hcm_is_reachable(
    sandbox: Sandbox, notify_socket: tuple[str, NotifySocket], daemon_factory: Callable[..., Daemon]
) -> None:
    env_value, sock = notify_socket
    config = sandbox.write_config()
    sandbox.hcm.stop()  # a network outage at boot must not become a start timeout
    daemon = daemon_factory(config, env={"NOTIFY_SOCKET": env_value})
    wait_until(lambda: sock.lines("READY=1"), what="READY=1")
    wait_until(lambda: "cycle failed" in daemon.stderr(), what="a failed cycle")
    assert daemon.proc.poll() is None
    assert daemon.terminate()[0] == 0
    sandbox.hcm.start()  # the same port again, for the teardown


def test_json_logs_are_one_object_per_line(sandbox: Sandbox) -> None:
    sandbox.hcm.add_hires(2, updated_ms=sandbox.hcm.now_ms() - 1000, spacing_ms=1)
    config = sandbox.write_config(logging={"format": "json", "level": "INFO"})
    result = atomsync("-c", str(config), "once")
    assert result.returncode == 0
    docs = [json.loads(line) for line in result.stderr.splitlines()]
    assert docs and all({"time", "level", "logger", "msg"} <= set(d) for d in docs)
    published = [d for d in docs if d.get("action") == "published"]
    assert len(published) == 2
    assert all(
        d["feed"] == "newhire" and d["entry_id"].startswith("atomservlet:newhire:")
        for d in published
    )
    summary = [d for d in docs if d["logger"] == "atomsync.runner" and "fetched 2" in d["msg"]]
    assert summary and summary[0]["feed"] == "newhire"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _series(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


def test_metrics_endpoint_and_textfile_move_with_the_daemon(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    port = _free_port()
    textfile = tmp_path / "atomsync.prom"
    config = sandbox.write_config(
        poll={"interval_seconds": 0.5},
        metrics={"listen": f"127.0.0.1:{port}", "textfile": str(textfile)},
    )
    daemon = daemon_factory(config)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    first = wait_until(lambda: _try(scrape), what="/metrics")
    published = 'atomsync_events_published_total{feed="newhire"}'
    assert _series(first, published) == 0
    sandbox.hcm.add_hires(4, spacing_ms=1)
    wait_until(lambda: len(sandbox.ons.accepted) == 4, what="4 messages")
    wait_until(lambda: _series(scrape(), published) == 4, what="the counter to move")
    text = scrape()
    for name in (
        'atomsync_events_failed_total{feed="newhire"}',
        'atomsync_events_deadlettered_total{feed="newhire"}',
        'atomsync_cycle_duration_seconds{feed="newhire"}',
        'atomsync_watermark_lag_seconds{feed="newhire"}',
        'atomsync_last_success_timestamp_seconds{feed="newhire"}',
    ):
        _series(text, name)
    assert (
        abs(_series(text, 'atomsync_last_success_timestamp_seconds{feed="newhire"}') - time.time())
        < 30
    )
    wait_until(
        lambda: textfile.exists() and published + " 4.0" in textfile.read_text(), what="textfile"
    )
    sandbox.hcm.inject("500", times=2)
    wait_until(
        lambda: 'atomsync_errors_total{feed="newhire",kind="server"}' in scrape(),
        what="the error counter",
    )
    assert daemon.terminate()[0] == 0


def _try(fn: Callable[[], str]) -> str:
    try:
        return fn()
    except OSError:
        return ""


def test_health_follows_the_last_success(sandbox: Sandbox) -> None:
    config = sandbox.write_config()
    never = atomsync("-c", str(config), "health")
    assert never.returncode == 1 and "never polled" in never.stdout
    assert atomsync("-c", str(config), "once").returncode == 0
    assert atomsync("-c", str(config), "health").returncode == 0
    time.sleep(1.1)
    stale = atomsync("-c", str(config), "health", "--max-age", "1")
    assert stale.returncode == 1 and "stale" in stale.stdout
    sandbox.hcm.inject("503", times=1)
    assert atomsync("-c", str(config), "once").returncode == 1
    failing = atomsync("-c", str(config), "health", "--max-age", "1")
    assert failing.returncode == 1 and "success stale, attempts recent" in failing.stdout
    assert "503" in failing.stdout


def test_log_file_survives_rotation(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    log = tmp_path / "atomsync.log"
    config = sandbox.write_config(poll={"interval_seconds": 0.3})
    daemon = daemon_factory(config, "--log-file", str(log))
    sandbox.hcm.add_hires(1)
    wait_until(lambda: log.exists() and "published" in log.read_text(), what="a log line")
    log.rename(tmp_path / "atomsync.log.1")  # what logrotate does by default
    sandbox.hcm.add_hires(1)
    wait_until(lambda: log.exists() and "published" in log.read_text(), what="the reopened log")
    assert daemon.terminate()[0] == 0
    assert daemon.stderr() == ""  # everything went to the file


def test_check_passes_against_the_simulators(sandbox: Sandbox) -> None:
    config = sandbox.write_config(feeds=["newhire", "jobs"])
    result = atomsync("-c", str(config), "check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in (
        "config",
        "state",
        "hcm newhire",
        "hcm jobs",
        "clock vs HCM",
        "oci signer",
        "clock vs OCI",
    ):
        assert any(line.startswith(f"ok   {name}:") for line in lines), (name, lines)
    assert any(line.startswith("ok   topic ") and "found" in line for line in lines)
    assert lines[-1] == "all checks passed"
    assert sandbox.ons.accepted == []  # checking sends no message


def test_check_names_a_wrong_password_and_a_wrong_topic(sandbox: Sandbox) -> None:
    (sandbox.dir / "hcm_password").write_text("not-the-password\n")
    config = sandbox.write_config(publisher={"topic_id": "ocid1.onstopic.oc1.iad.aaaaaaaanosuch"})
    result = atomsync("-c", str(config), "check")
    assert result.returncode == 1
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 2, result.stdout
    assert "hcm newhire" in fails[0] and "401" in fails[0] and "password" in fails[0]
    assert "topic" in fails[1] and "ocid1.onstopic.oc1.iad.aaaaaaaanosuch" in fails[1]
    assert "use ons-topics" in fails[1]
    assert "not-the-password" not in result.stdout + result.stderr


def test_check_reports_a_clock_more_than_five_minutes_off(sandbox: Sandbox) -> None:
    sandbox.ons.clock = lambda: time.time() + 600  # the service thinks it is 10 min later
    result = atomsync("-c", str(sandbox.write_config()), "check")
    assert result.returncode == 1
    assert any(
        line.startswith("FAIL clock vs OCI") and "ahead" not in line and "behind" in line
        for line in result.stdout.splitlines()
    ), result.stdout
    assert "clock" in result.stdout and "5 minutes" in result.stdout


def test_secrets_readable_by_others_are_warned_about(sandbox: Sandbox, tmp_path: Path) -> None:
    password_file = sandbox.dir / "hcm_password"
    password_file.chmod(0o644)
    result = atomsync("-c", str(sandbox.write_config()), "once")
    assert f"{password_file} holds a secret and is readable by others" in result.stderr
    password_file.chmod(0o600)
    inline = tmp_path / "inline.yaml"
    doc = sandbox.config()
    doc["hcm"].pop("password_file")
    doc["hcm"]["password"] = sandbox.password
    inline.write_text(json.dumps(doc))
    inline.chmod(0o640)
    check = atomsync("-c", str(inline), "check")
    assert f"warn permissions: {inline} holds a secret and is readable by group" in check.stdout
    inline.chmod(0o600)
    quiet = atomsync("-c", str(inline), "check")
    assert "permissions" not in quiet.stdout and quiet.returncode == 0
    key = sandbox.dir / "oci_api_key.pem"
    key.chmod(0o644)
    warned = atomsync("-c", str(inline), "check")
    assert f"{key} holds the OCI API private key and is readable by others" in warned.stdout
    assert warned.returncode == 0  # a warning, not a failure
    # The secret scan must not trip on this test's own config file.
    inline.unlink()
