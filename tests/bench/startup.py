"""d. Start-up: wall time of `atomsync --help` and `atomsync status` against `import yaml`.

The commands run round-robin (so load on the shared machine hits all of them alike), many
times each; the figures are medians. A separate run checks which heavy modules each command
imports: neither may pull in oci, feedparser or requests.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from atomsync.state import FeedState, FileStore
from tests.bench.common import PYTHON, ROOT, Figure, Goal, cli_env, median

BENCH = "d. start-up"
REPEATS = 40
HEAVY = ("oci", "feedparser", "requests")

_PROBE = r"""
import sys
from atomsync.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stdout.flush()
print("\nHEAVY:" + " ".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def _config(workdir: Path) -> Path:
    """A configuration with three feeds, each with a state file, as on a running system."""
    state = workdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    store = FileStore(state)
    now = time.time_ns() // 1_000_000
    names = ("newhire", "termination", "empassignment")
    for i, name in enumerate(names):
        keys = {f"urn:hcm:{name}:{k}@2024-01-01T00:00:00.000Z": 1_704_067_200_000 for k in range(3)}
        store.save(name, FeedState("updated", now - i * 1000, None, keys, published=42))
    password = workdir / "hcm_password"
    password.write_text("not-used\n")
    password.chmod(0o600)
    doc = {
        "hcm": {
            "base_url": "http://127.0.0.1:9",
            "username": "INTEGRATION_USER",
            "password_file": str(password),
        },
        "feeds": [{"name": n} for n in names],
        "state": {"dir": str(state)},
        "publisher": {"topic_id": "ocid1.onstopic.oc1.iad.aaaaaaaabench"},
    }
    path = workdir / "atomsync.yaml"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def _atomsync() -> list[str]:
    script = Path(PYTHON).parent / "atomsync"  # the console script a user types
    return [str(script)] if script.exists() else [PYTHON, "-m", "atomsync"]


def run(workdir: Path) -> list[Figure]:
    config = _config(workdir)
    commands = {
        "pass": [PYTHON, "-c", "pass"],
        "yaml": [PYTHON, "-c", "import yaml"],
        "help": [*_atomsync(), "--help"],
        "status": [*_atomsync(), "-c", str(config), "status"],
    }
    env = cli_env()
    for cmd in commands.values():  # warm the page cache; a failing command stops here
        subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env, cwd=ROOT, check=True)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(REPEATS):
        for name, cmd in commands.items():
            started = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env, cwd=ROOT, check=True)
            times[name].append(time.perf_counter() - started)
    heavy: dict[str, str] = {}
    for name, args in (("help", ["--help"]), ("status", ["-c", str(config), "status"])):
        probe = subprocess.run(
            [PYTHON, "-c", _PROBE.format(heavy=HEAVY), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        )
        found = [line for line in probe.stderr.splitlines() if line.startswith("HEAVY:")]
        heavy[name] = found[-1][len("HEAVY:") :].strip() or "none"
    base = median(times["yaml"])
    reps = f"median of {REPEATS}, round-robin"
    python_only = f"bare `python -c pass`: {median(times['pass']) * 1000:.1f} ms"
    return [
        Figure(
            BENCH,
            "atomsync --help",
            median(times["help"]),
            "s",
            reps,
            base,
            "python -c 'import yaml'",
            Goal("ratio", "<=", 1.5),
            f"heavy modules imported: {heavy['help']}; {python_only}",
        ),
        Figure(
            BENCH,
            "atomsync status (3 feeds)",
            median(times["status"]),
            "s",
            reps,
            base,
            "python -c 'import yaml'",
            Goal("ratio", "<=", 1.5),
            f"heavy modules imported: {heavy['status']}",
        ),
    ]
