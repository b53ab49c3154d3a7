"""`atomsync simulate`: both simulators on fixed loopback ports, for trying atomsync by hand.

Writes a throwaway API key, an OCI config and a ready atomsync.yaml into a directory, then
serves until Ctrl-C, adding new hires at a steady rate. Entries and faults can be added over
the simulators' `/_sim/` admin API while it runs.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Optional

from atomsync.sim.sandbox import Sandbox


def serve(
    directory: str, hcm_port: int, ons_port: int, hires_per_minute: float, *, once: bool = False
) -> int:
    box = Sandbox(Path(directory).resolve(), hcm_port=hcm_port, ons_port=ons_port)
    try:
        box.start()
    except OSError as exc:
        print(f"atomsync simulate: cannot listen: {exc}", file=sys.stderr)
        return 1
    path = box.write_config(feeds=[{"name": "newhire", "start_at": "beginning"}])
    example = '{"feed": "newhire", "count": 3}'
    print(
        f"HCM Atom simulator:          {box.hcm.url}  (user {box.hcm.username}, password in "
        f"{box.dir / 'hcm_password'})\n"
        f"OCI Notifications simulator: {box.ons.url}  (topic {box.topic_id})\n"
        f"configuration:               {path}\n\n"
        f"try:  atomsync -c {path} once --dry-run\n"
        f"      atomsync -c {path} run\n"
        f"      curl -s -X POST {box.hcm.url}/_sim/entries -d '{example}'\n"
        f"      curl -s {box.ons.url}/_sim/messages\n\n"
        f"adding {hires_per_minute:g} new hires a minute; Ctrl-C stops.",
        flush=True,
    )
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        period: Optional[float] = 60.0 / hires_per_minute if hires_per_minute > 0 else None
        while not once:
            if stop.wait(period if period else 3600):
                break
            if period:
                box.hcm.add_hires(1)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        box.stop()
    return 0
