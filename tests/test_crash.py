"""Crash safety, proven by killing `atomsync run` with SIGKILL at random moments.

Between kills new entries keep arriving (some sharing a millisecond, some late). At the end
every entry must have been published (lost = 0), and each kill may have repeated at most the
one event in flight (duplicates <= kills).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from atomsync.sim.sandbox import Sandbox
from tests.conftest import ROOT, cli_env, entry_keys, published_keys, wait_until


@dataclass
class Outcome:
    kills: int
    kills_while_publishing: int
    expected: int
    published: int
    lost: int
    duplicates: int


def crash_loop(box: Sandbox, tmp: Path, *, kills: int, backlog: int, seed: int) -> Outcome:
    rng = random.Random(seed)
    now = box.hcm.now_ms()
    # A backlog with runs of equal timestamps straddling pages.
    for i in range(backlog // 10):
        box.hcm.add_hires(10, updated_ms=now - 600_000 + i * 1000, spacing_ms=rng.choice([0, 3]))
    config = box.write_config(
        hcm={"page_size": 25},
        poll={"interval_seconds": 0.2, "sweep_interval_seconds": 0},
        publisher={"max_messages_per_minute": 1500},
    )
    log = open(tmp / "crash.log", "w")  # noqa: SIM115 - closed below
    killed_mid_publish = 0
    try:
        for _ in range(kills):
            before = len(box.ons.accepted)
            proc = subprocess.Popen(
                [sys.executable, "-m", "atomsync", "-c", str(config), "run"],
                stdout=log,
                stderr=log,
                env=cli_env(),
                cwd=ROOT,
            )
            # Kill at a random moment once it has started publishing, or at start-up.
            if rng.random() < 0.8:
                wait_until(
                    lambda b=before, p=proc: len(box.ons.accepted) > b or p.poll() is not None,
                    timeout=30,
                    what="publishing to start",
                )
            time.sleep(rng.uniform(0.0, 0.6))
            publishing = len(box.ons.accepted) > before
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            killed_mid_publish += publishing
            # Meanwhile HCM keeps changing: new hires, and one committed late.
            box.hcm.add_hires(rng.randint(0, 4), spacing_ms=rng.choice([0, 1]))
            if rng.random() < 0.3:
                box.hcm.add_entry("newhire", updated_ms=box.hcm.now_ms() - 60_000)
        # Let a last run drain everything, then stop it politely.
        proc = subprocess.Popen(
            [sys.executable, "-m", "atomsync", "-c", str(config), "run"],
            stdout=log,
            stderr=log,
            env=cli_env(),
            cwd=ROOT,
        )
        expected = entry_keys(box)
        wait_until(lambda: set(published_keys(box)) >= expected, timeout=120, what="every entry")
        time.sleep(0.5)  # a further cycle must add nothing
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        log.close()
    counts = Counter(published_keys(box))
    # A publisher killed mid-request leaves a half-sent request: a dropped connection, the
    # only "rejection" allowed. Anything else (a bad signature, a 429) is a failure.
    assert [r for r in box.ons.rejected if r.code != "ConnectionAborted"] == []
    return Outcome(
        kills=kills,
        kills_while_publishing=killed_mid_publish,
        expected=len(expected),
        published=sum(counts.values()),
        lost=len(expected - set(counts)),
        duplicates=sum(c - 1 for c in counts.values()),
    )


@pytest.mark.slow
def test_sigkill_twenty_times_loses_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    outcome = crash_loop(sandbox, tmp_path, kills=20, backlog=400, seed=20261203)
    print(f"\ncrash loop: {outcome}")
    assert outcome.lost == 0
    assert outcome.duplicates <= outcome.kills
    assert outcome.kills_while_publishing >= 10, "too few kills landed mid-publish to prove much"


@pytest.mark.soak
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_soak(sandbox: Sandbox, tmp_path: Path, seed: int) -> None:
    outcome = crash_loop(sandbox, tmp_path, kills=100, backlog=1500, seed=seed)
    print(f"\ncrash soak (seed {seed}): {outcome}")
    assert outcome.lost == 0
    assert outcome.duplicates <= outcome.kills
