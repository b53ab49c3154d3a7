"""Shared fixtures: the sandbox (both simulators) and running the CLI the way a user does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from atomsync.sim.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent


# Everything the CLI printed in this test, for the secret scan.
_OUTPUTS: list[str] = []


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    _OUTPUTS.clear()
    with Sandbox(tmp_path / "sandbox") as box:
        yield box
    assert_no_secrets(box, tmp_path)


def assert_no_secrets(box: Sandbox, root: Path) -> None:
    """No output, log, state or status file of the test holds the HCM password or the
    private key, except the files that are meant to (the password file, the key file)."""
    assert box.key is not None
    pem_body = box.key.private_pem.decode().splitlines()[1]  # a line of the key itself
    secrets = [box.password.encode(), pem_body.encode()]
    allowed = {box.dir / "hcm_password", box.dir / "oci_api_key.pem"}
    for path in root.rglob("*"):
        if path.is_file() and path not in allowed:
            data = path.read_bytes()
            for secret in secrets:
                assert secret not in data, f"a secret leaked into {path}"
    for text in _OUTPUTS:
        for secret in secrets:
            assert secret.decode() not in text, "a secret leaked into the CLI's output"


def cli_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATOMSYNC_", "NOTIFY_"))}
    env.pop("JOURNAL_STREAM", None)
    env.update(extra or {})
    return env


def atomsync(
    *args: str,
    timeout: float = 60,
    env: Optional[dict[str, str]] = None,
    cwd: Optional[Path] = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m atomsync ARGS` to completion."""
    result = subprocess.run(
        [sys.executable, "-m", "atomsync", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
        cwd=cwd or ROOT,
        check=False,
    )
    _OUTPUTS.extend((result.stdout, result.stderr))
    return result


class Daemon:
    """`atomsync run` in the background, with its output collected in files."""

    def __init__(
        self, config: Path, workdir: Path, *extra: str, env: Optional[dict[str, str]] = None
    ) -> None:
        self.out = open(workdir / "daemon.out", "w+")  # noqa: SIM115 - closed in stop()
        self.err = open(workdir / "daemon.err", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atomsync", "-c", str(config), "run", *extra],
            stdout=self.out,
            stderr=self.err,
            env=cli_env(env),
            cwd=ROOT,
        )

    def stderr(self) -> str:
        self.err.flush()
        return Path(self.err.name).read_text()

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.out.close()
        self.err.close()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(config: Path, *extra: str, env: Optional[dict[str, str]] = None) -> Daemon:
        d = Daemon(config, tmp_path, *extra, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def state_file(box: Sandbox, feed: str = "newhire") -> Path:
    return box.dir / "state" / f"{feed}.state.json"


def state_doc(box: Sandbox, feed: str = "newhire") -> dict[str, Any]:
    doc = json.loads(state_file(box, feed).read_text())  # atomic renames: always whole
    assert isinstance(doc, dict)
    return doc


def watermark(box: Sandbox, feed: str = "newhire") -> Optional[str]:
    value = state_doc(box, feed)["watermark"]
    assert value is None or isinstance(value, str)
    return value


def published_keys(box: Sandbox) -> list[str]:
    """Event keys (id@updated) of every message the ONS simulator accepted, in order."""
    out = []
    for msg in box.ons.accepted:
        body = json.loads(msg.body)
        out.append(f"{body['id']}@{body['updated']}")
    return out


def entry_keys(box: Sandbox, collection: str = "newhire") -> set[str]:
    from atomsync.timeutil import format_ms

    return {f"{e.id}@{format_ms(e.updated_ms)}" for e in box.hcm.entries(collection)}
