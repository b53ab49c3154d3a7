"""sd_notify against real AF_UNIX datagram sockets, path and abstract forms."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from atomsync.notify import Notifier


def bound(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def test_ready_status_stopping_on_a_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with bound(path) as sock:
        n = Notifier({"NOTIFY_SOCKET": path})
        n.ready("starting")
        assert sock.recv(4096) == b"READY=1\nSTATUS=starting"
        n.status("ok;\n 3 published")
        assert sock.recv(4096) == b"STATUS=ok; 3 published"
        n.stopping()
        assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket_address() -> None:
    name = f"atomsync-test-{uuid.uuid4().hex}"
    with bound("\0" + name) as sock:
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def test_watchdog_interval_and_rate_limit(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with bound(path) as sock:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"})
        assert n.watchdog_interval == 10.0  # half of WatchdogSec
        n.watchdog()
        n.watchdog()  # too soon: not sent
        n.watchdog(force=True)
        sock.settimeout(0.2)
        assert [sock.recv(64), sock.recv(64)] == [b"WATCHDOG=1", b"WATCHDOG=1"]
        with pytest.raises(socket.timeout):
            sock.recv(64)


def test_watchdog_for_another_pid_is_ignored() -> None:
    n = Notifier(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": str(os.getpid() + 1)}
    )
    assert n.watchdog_interval is None


def test_unset_or_broken_socket_never_raises(tmp_path: Path) -> None:
    assert not Notifier({}).enabled
    Notifier({}).ready()
    broken = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
    assert broken.send("READY=1") is False
