"""End to end: the CLI in a subprocess, both simulators, the real oci signer.

The ONS simulator verifies every request's signature with the public key, so an accepted
message proves the signing, and `rejected` must stay empty.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Callable

import pytest

from atomsync.errors import EXIT_CONFIG
from atomsync.sim.sandbox import Sandbox
from atomsync.timeutil import format_ms
from tests.conftest import (
    Daemon,
    atomsync,
    entry_keys,
    published_keys,
    state_file,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_57_entries_with_page_size_25_give_exactly_57_signed_messages(sandbox: Sandbox) -> None:
    sandbox.hcm.add_hires(57, updated_ms=sandbox.hcm.now_ms() - 60_000, spacing_ms=10)
    config = sandbox.write_config(hcm={"page_size": 25})
    result = atomsync("-c", str(config), "once")
    assert result.returncode == 0, result.stderr
    assert len(sandbox.ons.accepted) == 57
    assert sandbox.ons.rejected == []  # every signature verified
    assert sorted(published_keys(sandbox)) == sorted(entry_keys(sandbox))
    assert {m.key_id for m in sandbox.ons.accepted} == {sandbox.key.key_id}  # type: ignore[union-attr]
    pages = [r for r in sandbox.hcm.requests if r.path.endswith("/employee/newhire")]
    assert [r.query["page"] for r in pages] == ["1", "2", "3"]
    assert {r.query["page-size"] for r in pages} == {"25"}
    assert all(r.query["orderBy"] == "updated:asc" for r in pages)
    body = json.loads(sandbox.ons.accepted[0].body)
    assert body["feed"] == "newhire" and body["workspace"] == "employee"
    assert sandbox.ons.accepted[0].title.startswith("New hire: ")
    # A second run publishes nothing new.
    assert atomsync("-c", str(config), "once").returncode == 0
    assert len(sandbox.ons.accepted) == 57


def test_equal_millisecond_run_across_pages_then_more_at_that_millisecond(sandbox: Sandbox) -> None:
    same = sandbox.hcm.now_ms() - 30_000
    sandbox.hcm.add_hires(40, updated_ms=same)
    config = sandbox.write_config(hcm={"page_size": 25})
    assert atomsync("-c", str(config), "once").returncode == 0
    assert len(sandbox.ons.accepted) == 40
    sandbox.hcm.add_hires(9, updated_ms=same)  # committed later, same millisecond
    assert atomsync("-c", str(config), "once").returncode == 0
    keys = published_keys(sandbox)
    assert len(keys) == len(set(keys)) == 49, "lost or duplicated"
    assert set(keys) == entry_keys(sandbox)
    assert sandbox.ons.rejected == []


def test_entry_appearing_60s_behind_the_watermark_is_published_once(sandbox: Sandbox) -> None:
    now = sandbox.hcm.now_ms()
    sandbox.hcm.add_hires(3, updated_ms=now - 5_000, spacing_ms=100)
    config = sandbox.write_config(poll={"overlap_seconds": 300})
    assert atomsync("-c", str(config), "once").returncode == 0
    watermark = json.loads(state_file(sandbox).read_text())["watermark"]
    late = sandbox.hcm.add_entry("newhire", updated_ms=sandbox.hcm.now_ms() - 60_000)
    assert atomsync("-c", str(config), "once").returncode == 0
    assert atomsync("-c", str(config), "once").returncode == 0
    keys = published_keys(sandbox)
    assert keys.count(f"{late.id}@{format_ms(late.updated_ms)}") == 1
    assert len(keys) == 4
    # The late entry sits behind the watermark, which never moves backwards.
    assert json.loads(state_file(sandbox).read_text())["watermark"] == watermark


def test_dry_run_publishes_nothing_and_changes_no_state(sandbox: Sandbox) -> None:
    config = sandbox.write_config()
    # Without any state: nothing may be created.
    sandbox.hcm.add_hires(3, updated_ms=sandbox.hcm.now_ms() - 1000, spacing_ms=1)
    dry = atomsync("-c", str(config), "once", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    ids = {e.id for e in sandbox.hcm.entries("newhire")}
    lines = dry.stdout.splitlines()
    assert len(lines) == 3
    assert {line.split("\t")[2] for line in lines} == ids
    assert not (sandbox.dir / "state").exists()
    assert sandbox.ons.accepted == []
    # With state: byte for byte unchanged, even with new entries waiting.
    assert atomsync("-c", str(config), "once").returncode == 0
    before = {p.name: p.read_bytes() for p in (sandbox.dir / "state").iterdir()}
    sandbox.hcm.add_hires(2)
    dry = atomsync("-c", str(config), "once", "--dry-run")
    assert dry.returncode == 0 and len(dry.stdout.splitlines()) == 2
    after = {p.name: p.read_bytes() for p in (sandbox.dir / "state").iterdir()}
    assert after == before
    assert len(sandbox.ons.accepted) == 3


def test_misspelt_or_missing_key_exits_78_naming_it(sandbox: Sandbox, tmp_path: Path) -> None:
    doc = sandbox.config()
    doc["hcm"]["usename"] = doc["hcm"].pop("username")
    bad = tmp_path / "misspelt.yaml"
    bad.write_text(json.dumps(doc))
    result = atomsync("-c", str(bad), "once")
    assert result.returncode == EXIT_CONFIG
    assert "hcm.usename" in result.stderr and "username" in result.stderr
    doc["hcm"].pop("usename")
    bad.write_text(json.dumps(doc))
    result = atomsync("once", "-c", str(bad))  # -c after the command works too
    assert result.returncode == EXIT_CONFIG
    assert "hcm.username: required key is missing" in result.stderr
    assert sandbox.ons.accepted == []


def test_unreadable_state_exits_78_naming_the_file(sandbox: Sandbox) -> None:
    config = sandbox.write_config()
    sandbox.hcm.add_hires(1)
    path = state_file(sandbox)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema_version": 1, "cursor": "updated", "watermark": "garbage"')
    for command in (["once"], ["run"]):
        result = atomsync("-c", str(config), *command, timeout=30)
        assert result.returncode == EXIT_CONFIG, result.stderr
        assert str(path) in result.stderr
    assert sandbox.ons.accepted == []
    assert path.read_text().endswith('"garbage"')  # never silently reset


def test_hcm_401_logs_one_clear_line_and_keeps_the_watermark(sandbox: Sandbox) -> None:
    sandbox.hcm.add_hires(2, updated_ms=sandbox.hcm.now_ms() - 1000)
    config = sandbox.write_config()
    assert atomsync("-c", str(config), "once").returncode == 0
    before = state_file(sandbox).read_bytes()
    sandbox.hcm.add_hires(2)
    (sandbox.dir / "hcm_password").write_text("wrong-password\n")
    result = atomsync("-c", str(config), "once")
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if "cycle failed" in line]
    assert len(failures) == 1, result.stderr
    assert "newhire" in failures[0] and "401" in failures[0] and "credentials" in failures[0]
    assert "wrong-password" not in result.stderr
    assert state_file(sandbox).read_bytes() == before
    assert len(sandbox.ons.accepted) == 2


def test_daemon_publishes_as_entries_appear_and_stops_on_sigterm(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon]
) -> None:
    config = sandbox.write_config(poll={"interval_seconds": 0.5})
    daemon = daemon_factory(config)
    wait_until(lambda: state_file(sandbox).exists(), what="the first cycle")
    for added, total in ((2, 2), (3, 5)):
        sandbox.hcm.add_hires(added, spacing_ms=1)
        wait_until(lambda t=total: len(sandbox.ons.accepted) >= t, what=f"{total} messages")
    time.sleep(0.6)  # the stop arrives while the daemon sleeps between cycles
    code, took = daemon.terminate(signal.SIGTERM)
    assert code == 0, daemon.stderr()
    assert took < 10  # poll.shutdown_timeout_seconds, the documented bound
    assert sorted(published_keys(sandbox)) == sorted(entry_keys(sandbox))
    assert "stopped" in daemon.stderr()
    status = atomsync("-c", str(config), "status", "--json")
    doc = json.loads(status.stdout)  # stdout holds only the JSON document
    feed = doc["feeds"]["newhire"]
    assert feed["published"] == 5 and feed["dead_letters"] == 0
    assert feed["watermark"] and feed["last_poll"] and feed["last_success"]
    assert doc["daemon"]["pid"] is None


def test_sigint_also_stops_cleanly(sandbox: Sandbox, daemon_factory: Callable[..., Daemon]) -> None:
    config = sandbox.write_config(poll={"interval_seconds": 30})
    daemon = daemon_factory(config)
    wait_until(lambda: state_file(sandbox).exists(), what="the first cycle")
    code, took = daemon.terminate(signal.SIGINT)
    assert code == 0 and took < 10, daemon.stderr()


def test_second_instance_exits_78_naming_lock_and_pid(
    sandbox: Sandbox, daemon_factory: Callable[..., Daemon]
) -> None:
    config = sandbox.write_config(poll={"interval_seconds": 30})
    daemon = daemon_factory(config)
    wait_until(lambda: state_file(sandbox).exists(), what="the first cycle")
    second = atomsync("-c", str(config), "run", timeout=30)
    assert second.returncode == EXIT_CONFIG
    assert "atomsync.lock" in second.stderr and f"pid {daemon.proc.pid}" in second.stderr


def test_status_text_and_watermark_command(sandbox: Sandbox) -> None:
    sandbox.hcm.add_hires(2, updated_ms=sandbox.hcm.now_ms() - 10_000, spacing_ms=5)
    config = sandbox.write_config()
    assert atomsync("-c", str(config), "once").returncode == 0
    text = atomsync("-c", str(config), "status")
    assert text.returncode == 0 and "newhire" in text.stdout and "PUBLISHED" in text.stdout
    mark = "2020-01-01T00:00:00.000Z"
    moved = atomsync("-c", str(config), "watermark", "newhire", "--set", mark)
    assert moved.returncode == 0 and moved.stdout.strip().endswith(f"-> {mark}")
    shown = atomsync("-c", str(config), "watermark", "newhire")
    assert shown.stdout.strip() == f"newhire: {mark}"
    # Re-reading from 2020 re-publishes both entries.
    assert atomsync("-c", str(config), "once").returncode == 0
    assert len(sandbox.ons.accepted) == 4


def test_help_needs_no_config_and_usage_errors_exit_2() -> None:
    result = atomsync("--help")
    assert result.returncode == 0 and "once" in result.stdout
    assert atomsync("nonsense").returncode == 2
