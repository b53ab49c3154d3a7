"""Command line: argument parsing, logging set-up and exit codes (design.md §2).

Heavy modules (oci, feedparser, requests) are imported inside the commands that need them,
so `--help` and `status` stay fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

from atomsync import __version__
from atomsync.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, AtomsyncError, ConfigError


def _log() -> logging.Logger:
    import logging  # only commands that log pay for it (not --help, status, health)

    return logging.getLogger("atomsync")


if TYPE_CHECKING:  # keeps start-up free of the config module's imports
    import logging

    from atomsync.config import Config
    from atomsync.message import Message


def _add_config(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        default=default,
        help="configuration file (default: $ATOMSYNC_CONFIG, ./atomsync.yaml, "
        "/etc/atomsync/atomsync.yaml)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atomsync",
        description="Keep downstream systems in step with Oracle HCM Cloud Atom feeds.",
    )
    parser.add_argument("--version", action="version", version=f"atomsync {__version__}")
    _add_config(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        # Accepted after the command name too; SUPPRESS keeps the global value otherwise.
        _add_config(p, argparse.SUPPRESS)
        return p

    p = command("run", "the daemon: a cycle at once, then one every poll.interval_seconds")
    p.add_argument("--log-file", metavar="PATH", help="append logs here (logrotate-safe)")
    p = command("once", "one cycle over every feed, then exit (1 if anything failed)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be published, one line per event; publish nothing, change no state",
    )
    p.add_argument("--sweep", action="store_true", help="use the long sweep look-back")
    command("check", "check the configuration, HCM, the OCI signer and topic, and the clock")
    p = command("status", "per feed: watermark, last poll, last success, published, dead letters")
    p.add_argument("--json", action="store_true", help="print one JSON document for scripts")
    p = command("watermark", "show a feed's watermark, or move it by hand")
    p.add_argument("feed", metavar="FEED")
    p.add_argument(
        "--set",
        metavar="ISO8601",
        dest="set_to",
        help="publish what comes after this time; entries at or before it are not "
        "published (stop the daemon first)",
    )
    p = command("replay", "re-publish a window of one feed without touching its live state")
    p.add_argument("feed", metavar="FEED")
    p.add_argument("--since", metavar="ISO8601", required=True, help="from this time (inclusive)")
    p.add_argument("--until", metavar="ISO8601", help="up to this time (inclusive; default: now)")
    p.add_argument("--dry-run", action="store_true", help="print what would be re-published")
    p = command("deadletter", "inspect and re-send events a sink rejected for good")
    p.add_argument("action", choices=("list", "retry"), nargs="?", default="list")
    p.add_argument("--feed", metavar="FEED", help="only this feed")
    p = command("health", "exit 0 when every feed succeeded recently, 1 otherwise")
    p.add_argument(
        "--max-age",
        metavar="SECONDS",
        type=float,
        help="how old the last success may be (default: 3 x interval + 60 s)",
    )
    p = command("simulate", "run the HCM Atom and OCI Notifications simulators on loopback")
    p.add_argument("--dir", default="atomsync-sim", help="where to write keys and a config")
    p.add_argument("--hcm-port", type=int, default=8080)
    p.add_argument("--ons-port", type=int, default=9000)
    p.add_argument(
        "--hires-per-minute", type=float, default=6.0, help="new hires to generate (0: none)"
    )
    p = command("demo", "the whole pipeline on the simulators; ends by itself")
    p.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = COMMANDS[args.command]
    try:
        return handler(args)
    except AtomsyncError as exc:
        kind = "configuration error" if isinstance(exc, ConfigError) else "error"
        if "logging" in sys.modules and sys.modules["logging"].getLogger().handlers:
            _log().error("%s: %s", kind, exc)
        else:
            print(f"atomsync: {kind}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


# --------------------------------------------------------------------------- helpers


def load_config(args: argparse.Namespace) -> Config:
    from atomsync import config

    path = config.find_config(args.config, os.environ)
    return config.load(path)


def setup_logging(cfg: Config, log_file: Optional[str] = None, level: Optional[str] = None) -> None:
    from atomsync import logsetup, perms

    logsetup.configure(
        level=level or cfg.logging.level,
        fmt=cfg.logging.format,
        file=log_file or cfg.logging.file,
        secrets=cfg.secrets(),
    )
    for warning in perms.warnings(cfg):
        _log().warning("%s", warning)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    from atomsync.daemon import Daemon

    cfg = load_config(args)
    setup_logging(cfg, args.log_file)
    daemon = Daemon(cfg)
    daemon.open()
    _log().info(
        "atomsync %s: %d feed(s), every %g s, publishing to %s; state in %s",
        __version__,
        len(cfg.feeds),
        cfg.poll.interval_seconds,
        cfg.publisher.kind,
        cfg.state.dir,
    )
    daemon.run()
    _exit_now_if_abandoned(daemon, EXIT_OK)
    return EXIT_OK  # run-time faults never end `run`; only signals do


def _exit_now_if_abandoned(daemon: Any, code: int) -> None:
    """After giving up on a request in flight, leave without joining its thread."""
    if daemon.abandoned:
        sys.modules["logging"].shutdown()
        sys.stdout.flush()
        os._exit(code)


def cmd_once(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    setup_logging(cfg)
    if args.dry_run:
        return _dry_run(cfg, args.sweep)
    from atomsync.daemon import Daemon

    daemon = Daemon(cfg, max_cycles=1, sweep=args.sweep)
    daemon.open()
    failed = daemon.run()
    _exit_now_if_abandoned(daemon, EXIT_FAILURE)
    results = daemon.last_results
    # A dead-lettered event was not published: the feed moved on, but this run failed it.
    complete = bool(results) and all(r.ok and not r.dead_lettered for r in results)
    return EXIT_OK if failed == 0 and complete else EXIT_FAILURE


def _dry_run(cfg: Config, sweep: bool) -> int:
    """Fetch and print; no lock, no publish, no state change (state is read, not written)."""
    from atomsync.feed import HcmClient
    from atomsync.runner import Runner, RunnerParts
    from atomsync.state import FileStore, MemoryStore
    from atomsync.sync import SystemClock

    disk, memory = FileStore(cfg.state.dir), MemoryStore()
    for feed in cfg.feeds:
        state = disk.load(feed.name)
        if state is not None:
            memory.states[feed.name] = state
    parts = RunnerParts(
        source=HcmClient(cfg.hcm), sink=_PrintSink(), store=memory, clock=SystemClock()
    )
    runner = Runner(cfg, parts, persist_new=False)
    runner.load_states()
    results = runner.cycle(allow_sweep=sweep, force_all=True)
    runner.close()
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILURE


class _PrintSink:
    """What `once --dry-run` 'publishes' to: a line per event on stdout."""

    name = "dry-run"
    max_request_bytes: Optional[int] = None

    def publish(self, message: Message) -> str:
        stamp = message.body.get("updated") or ""
        sys.stdout.write(f"{message.feed}\t{stamp}\t{message.entry_id}\t{message.title}\n")
        sys.stdout.flush()
        return message.key

    def close(self) -> None:
        pass


def cmd_check(args: argparse.Namespace) -> int:
    from atomsync import check, logsetup

    cfg = load_config(args)
    # The checks print their own findings; only library trouble goes to the log.
    logsetup.configure(level="ERROR", fmt=cfg.logging.format, secrets=cfg.secrets())
    results = check.run(cfg)
    for result in results:
        print(result.line(), flush=True)
    failed = sum(r.level == check.FAIL for r in results)
    print(f"{'all checks passed' if not failed else f'{failed} check(s) failed'}")
    return EXIT_OK if not failed else EXIT_FAILURE


def cmd_status(args: argparse.Namespace) -> int:
    from atomsync import status

    cfg = load_config(args)
    doc = status.report(cfg, now_ms())
    if args.json:
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    pid = doc["daemon"]["pid"]
    print(
        f"state: {doc['state_dir']}  daemon: {'running, pid ' + str(pid) if pid else 'not running'}"
    )
    rows = [("FEED", "WATERMARK", "LAST POLL", "LAST SUCCESS", "PUBLISHED", "DEAD LETTERS")]
    for name, f in doc["feeds"].items():
        rows.append(
            (
                name,
                f["watermark"] or "-",
                f["last_poll"] or "-",
                f["last_success"] or "-",
                str(f["published"]),
                str(f["dead_letters"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for name, f in doc["feeds"].items():
        if f["last_error"]:
            print(f"{name}: last error: {f['last_error']}")
    return EXIT_OK


def cmd_watermark(args: argparse.Namespace) -> int:
    from atomsync.state import FeedState, FileStore, Lock, describe, ensure_dir
    from atomsync.timeutil import format_ms

    cfg = load_config(args)
    feed = cfg.feed(args.feed)
    store = FileStore(cfg.state.dir)
    if args.set_to is None:
        print(f"{feed.name}: {describe(store.load(feed.name))}")
        return EXIT_OK
    at = _time_arg("--set", args.set_to)
    assert at is not None
    ensure_dir(cfg.state.dir)
    with Lock(cfg.state.dir):
        old = store.load(feed.name)
        new = FeedState(feed.cursor, watermark_ms=at, floor_ms=at)
        if old is not None:
            new.published, new.dead_letters = old.published, old.dead_letters
            new.last_published_ms = old.last_published_ms
            if old.cursor == feed.cursor:  # keys above the new mark must be published again
                new.keys = {k: c for k, c in old.keys.items() if c <= at}
        store.save(feed.name, new)
    print(f"{feed.name}: {describe(old)} -> {format_ms(at)}")
    return EXIT_OK


def _time_arg(flag: str, value: Optional[str]) -> Optional[int]:
    from atomsync.timeutil import parse_timestamp

    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except (ValueError, OverflowError):
        raise ConfigError(flag, f"not an ISO 8601 time: {value!r}") from None


def cmd_replay(args: argparse.Namespace) -> int:
    from atomsync.publish import build_sink
    from atomsync.replay import replay

    cfg = load_config(args)
    setup_logging(cfg)
    since = _time_arg("--since", args.since)
    until = _time_arg("--until", args.until)
    assert since is not None
    if until is not None and until < since:
        raise ConfigError("--until", "is before --since")
    sink = _PrintSink() if args.dry_run else build_sink(cfg)
    result = replay(cfg, args.feed, since, until, sink, dead_letters=not args.dry_run)
    return EXIT_OK if result.ok else EXIT_FAILURE


def cmd_deadletter(args: argparse.Namespace) -> int:
    from atomsync.deadletter import DeadLetterFile

    cfg = load_config(args)
    letters = DeadLetterFile(cfg.state.dir)
    if args.feed:
        cfg.feed(args.feed)  # an unknown feed is a usage mistake worth naming
    if args.action == "list":
        for letter in letters:
            if args.feed in (None, letter.feed):
                reason = " ".join(letter.reason.split())  # one line per dead letter, always
                print(f"{letter.feed}\t{letter.cursor}\t{letter.entry_id}\t{reason}")
        return EXIT_OK
    setup_logging(cfg)
    from atomsync.deadletter import retry

    sent, left = retry(cfg, letters, args.feed)
    print(f"re-sent {sent}, still dead-lettered {left}")
    return EXIT_OK if left == 0 else EXIT_FAILURE


def cmd_health(args: argparse.Namespace) -> int:
    from atomsync import status

    cfg = load_config(args)
    max_age = args.max_age if args.max_age is not None else 3 * cfg.poll.interval_seconds + 60
    ok, problems = status.health(cfg, now_ms(), max_age)
    if ok:
        print(f"ok: every feed succeeded within {max_age:g} s")
        return EXIT_OK
    for line in problems:
        print(line)
    return EXIT_FAILURE


def cmd_simulate(args: argparse.Namespace) -> int:
    from atomsync.sim.serve import serve

    return serve(args.dir, args.hcm_port, args.ons_port, args.hires_per_minute)


def cmd_demo(args: argparse.Namespace) -> int:
    from atomsync.demo import demo

    return demo(args.seconds)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "once": cmd_once,
    "check": cmd_check,
    "status": cmd_status,
    "watermark": cmd_watermark,
    "replay": cmd_replay,
    "deadletter": cmd_deadletter,
    "health": cmd_health,
    "simulate": cmd_simulate,
    "demo": cmd_demo,
}

__all__ = ["EXIT_CONFIG", "build_parser", "main"]
