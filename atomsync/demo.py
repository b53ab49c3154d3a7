"""`atomsync demo`: the whole pipeline on the simulators, self-contained, ends by itself.

A throwaway key pair and OCI config in a temporary directory, both simulators on free
loopback ports, and the real daemon with the real oci signer running short cycles while
new hires appear, among them the cases that lose events elsewhere: a run of hires sharing
one millisecond, a hire that shows up a minute behind the watermark, and a future-dated hire
that becomes effective during the run.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, TextIO

from atomsync import config as config_mod
from atomsync import logsetup
from atomsync.daemon import Daemon
from atomsync.sim.ons import Accepted
from atomsync.sim.sandbox import Sandbox
from atomsync.timeutil import format_ms

INTERVAL = 1.0


def _describe(msg: Accepted) -> str:
    body = json.loads(msg.body)
    ctx = (body.get("context") or [{}])[0]
    details = [
        f"id {body['id']}",
        f"updated {body['updated']}",
        f"person {ctx.get('PersonNumber', '?')}",
        f"start {ctx.get('EffectiveStartDate', '?')}",
    ]
    return f"  published  {msg.title}\n             " + "  ".join(details)


def _script(box: Sandbox, stop: threading.Event, seconds: float, out: TextIO) -> None:
    """New hires appear while the daemon runs."""
    now = box.hcm.now_ms()
    future = now + int(seconds * 500)  # effective half-way through the demo
    box.hcm.add_entry("newhire", updated_ms=future, published_ms=now)
    out.write(f"+ a future-dated hire, effective {format_ms(future)}\n")

    def late() -> None:
        box.hcm.add_entry("newhire", updated_ms=box.hcm.now_ms() - 60_000)

    steps: list[tuple[float, str, Callable[[], object]]] = [
        (0.25, "a burst of 3 hires sharing one millisecond", lambda: box.hcm.add_hires(3)),
        (0.40, "a hire approved late: stamped 60 s ago", late),
        (0.60, "2 more hires", lambda: box.hcm.add_hires(2, spacing_ms=7)),
    ]
    started = time.monotonic()
    for fraction, what, action in steps:
        if stop.wait(max(0.0, started + fraction * seconds - time.monotonic())):
            return
        action()
        out.write(f"+ {what}\n")


def demo(seconds: float = 20.0, out: TextIO = sys.stdout) -> int:
    seconds = max(5.0, min(seconds, 50.0))  # the contract: ends by itself within a minute
    with tempfile.TemporaryDirectory(prefix="atomsync-demo-") as tmp, Sandbox(Path(tmp)) as box:
        backlog = box.hcm.add_hires(4, updated_ms=box.hcm.now_ms() - 120_000, spacing_ms=1500)
        path = box.write_config(
            poll={"interval_seconds": INTERVAL, "sweep_interval_seconds": 0},
            publisher={"max_messages_per_minute": 120},
        )
        cfg = config_mod.load(path)
        logsetup.configure(level="INFO", secrets=cfg.secrets())
        logging.getLogger("atomsync.sync").setLevel("WARNING")  # the printer shows them
        out.write(
            f"atomsync demo: HCM simulator {box.hcm.url}, OCI Notifications simulator "
            f"{box.ons.url}\n{len(backlog)} hires already waiting; the daemon polls every "
            f"{INTERVAL:g} s for {seconds:g} s and signs every publish with a throwaway "
            "API key.\n\n"
        )
        out.flush()
        daemon = Daemon(cfg, max_cycles=int(seconds / INTERVAL))
        stop = threading.Event()
        printer = threading.Thread(target=_print_messages, args=(box, stop, out), daemon=True)
        script = threading.Thread(target=_script, args=(box, stop, seconds, out), daemon=True)
        printer.start()
        script.start()
        daemon.open()
        daemon.run()
        stop.set()
        script.join()
        printer.join()
        expected = {e.id + "@" + format_ms(e.updated_ms) for e in box.hcm.entries("newhire")}
        got = [json.loads(m.body) for m in box.ons.accepted]
        keys = [b["id"] + "@" + b["updated"] for b in got]
        duplicates = len(keys) - len(set(keys))
        missing = expected - set(keys)
        out.write(
            f"\n{len(box.hcm.entries('newhire'))} hires in HCM, {len(got)} messages accepted by "
            f"OCI Notifications (every signature verified), {duplicates} duplicates, "
            f"{len(missing)} missing.\n"
        )
        if box.ons.rejected:
            out.write(f"{len(box.ons.rejected)} requests were rejected: {box.ons.rejected[0]}\n")
        return 0 if not missing and not duplicates and not box.ons.rejected else 1


def _print_messages(box: Sandbox, stop: threading.Event, out: TextIO) -> None:
    shown = 0
    while True:
        done = stop.wait(0.1)
        accepted = box.ons.accepted
        for msg in accepted[shown:]:
            out.write(_describe(msg) + "\n")
            out.flush()
        shown = len(accepted)
        if done:
            return
