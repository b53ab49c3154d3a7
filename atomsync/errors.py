"""Errors that decide how the program ends, and their exit codes (design.md §2).

Only configuration and state problems stop the program; everything that goes wrong at run
time fails one cycle and is retried.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # a cycle failed at run time
EXIT_USAGE = 2  # argparse's own code for bad command lines
EXIT_CONFIG = 78  # os.EX_CONFIG: configuration or state error; systemd must not restart


class AtomsyncError(Exception):
    """Base class; `exit_code` tells the CLI how to end."""

    exit_code = EXIT_FAILURE


class ConfigError(AtomsyncError):
    """A configuration problem, always tied to the key that caused it."""

    exit_code = EXIT_CONFIG

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


class StateError(AtomsyncError):
    """State that cannot be read, written or trusted; names the file involved."""

    exit_code = EXIT_CONFIG

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


class LockHeldError(StateError):
    """Another process holds the state directory's lock."""

    def __init__(self, path: str, pid: int | None) -> None:
        who = f"another atomsync (pid {pid})" if pid else "another atomsync"
        super().__init__(
            path, f"{who} holds this lock; stop it first (only one writer per state directory)"
        )
        self.pid = pid
