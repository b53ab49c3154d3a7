"""The watermark store: durable round trips, refusal to guess, the single-writer lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atomsync.errors import EXIT_CONFIG, LockHeldError, StateError
from atomsync.state import FeedState, FileStore, Lock, initial_state, write_atomic

T0 = 1_709_543_722_000


def test_round_trip_keeps_milliseconds_keys_and_counters(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    state = FeedState("updated", floor_ms=T0 - 5)
    state.record("atomservlet:newhire:EMP1@2024-03-04T09:15:22.000Z", T0)
    state.record("atomservlet:newhire:EMP2@2024-03-04T09:15:22.001Z", T0 + 1)
    state.published, state.dead_letters, state.last_published_ms = 2, 1, T0 + 9
    store.save("newhire", state)
    loaded = store.load("newhire")
    assert loaded == state
    doc = json.loads(store.path("newhire").read_text())
    assert doc["watermark"] == "2024-03-04T09:15:22.001Z" and doc["schema_version"] == 1
    assert oct(store.path("newhire").stat().st_mode & 0o777) == "0o600"


def test_missing_file_is_a_first_run(tmp_path: Path) -> None:
    assert FileStore(tmp_path / "nowhere").load("newhire") is None


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"schema_version": 99}', "schema_version 99"),
        (b'{"schema_version": 1, "cursor": "created", "keys": []}', "cursor"),
        (
            b'{"schema_version": 1, "cursor": "updated", "watermark": "soon", "keys": []}',
            "not a timestamp",
        ),
        (
            b'{"schema_version": 1, "cursor": "updated", "watermark": "2024-01-01T00:00:00.000Z",'
            b' "keys": ["x@2025-01-01T00:00:00.000Z"]}',
            "beyond the watermark",
        ),
        (b'{"schema_version": 1, "cursor": "updated", "keys": "x"}', "keys is not a list"),
        (b'{"schema_version": 1, "cursor": "updated", "published": -1, "keys": []}', "published"),
    ],
)
def test_unreadable_or_inconsistent_state_is_refused(
    tmp_path: Path, content: bytes, words: str
) -> None:
    store = FileStore(tmp_path)
    store.path("newhire").write_bytes(content)
    with pytest.raises(StateError) as info:
        store.load("newhire")
    assert info.value.exit_code == EXIT_CONFIG
    assert str(store.path("newhire")) in str(info.value) and words in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_denied_names_the_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.save("newhire", FeedState("updated"))
    store.path("newhire").chmod(0)
    with pytest.raises(StateError, match="cannot read state"):
        store.load("newhire")


def test_prune_keeps_only_the_retention_window() -> None:
    state = FeedState("updated")
    for i in range(10):
        state.record(f"e{i}@x", T0 + i * 1000)
    assert state.prune(3000) == 6
    assert sorted(state.keys) == ["e6@x", "e7@x", "e8@x", "e9@x"]


def test_initial_state() -> None:
    assert initial_state("updated", "beginning", None, T0) == FeedState("updated")
    now = initial_state("updated", "now", None, T0)
    assert now.watermark_ms == now.floor_ms == T0
    at = initial_state("published", "at", 5, T0)
    assert (at.cursor, at.watermark_ms, at.floor_ms) == ("published", 5, 5)


def test_write_atomic_leaves_no_temp_files(tmp_path: Path) -> None:
    write_atomic(tmp_path / "f", b"one")
    write_atomic(tmp_path / "f", b"two")
    assert (tmp_path / "f").read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_lock_refuses_a_second_process_and_names_the_holder(tmp_path: Path) -> None:
    (tmp_path / ".state.abc.tmp").write_text("left by a crash")
    with Lock(tmp_path):
        assert not (tmp_path / ".state.abc.tmp").exists()  # cleaned once the lock is held
        code = (
            "import sys; from atomsync.state import Lock; from atomsync.errors import LockHeldError\n"
            "try:\n    Lock(__import__('pathlib').Path(sys.argv[1])).acquire()\n"
            "except LockHeldError as e:\n    print(e); sys.exit(e.exit_code)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False
        )
        assert out.returncode == EXIT_CONFIG
        assert f"pid {os.getpid()}" in out.stdout and "atomsync.lock" in out.stdout
    # Released: a new holder succeeds.
    with Lock(tmp_path):
        pass


def test_lock_is_per_open_file_description(tmp_path: Path) -> None:
    first = Lock(tmp_path)
    first.acquire()
    with pytest.raises(LockHeldError):
        Lock(tmp_path).acquire()
    first.release()


def test_unreadable_state_names_the_file_even_for_root(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.path("newhire").mkdir()  # anything that is not a readable file
    with pytest.raises(StateError, match="cannot read state") as info:
        store.load("newhire")
    assert str(store.path("newhire")) in str(info.value)
