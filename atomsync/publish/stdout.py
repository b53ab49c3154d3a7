"""Stdout sink: one JSON line per event, for piping into other tools and for debugging."""

from __future__ import annotations

import json
import sys
import threading
from typing import Optional, TextIO

from atomsync.message import Message
from atomsync.publish import SinkError


class StdoutSink:
    name = "stdout"
    max_request_bytes: Optional[int] = None

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream
        self.lock = threading.Lock()  # one whole line per event, even from several feeds

    def publish(self, message: Message) -> str:
        line = json.dumps({"title": message.title, "body": message.body}, ensure_ascii=False)
        out = self.stream or sys.stdout
        try:
            with self.lock:
                out.write(line + "\n")
                out.flush()
        except OSError as exc:  # e.g. the reading end of a pipe went away
            raise SinkError(
                f"cannot write to stdout: {exc.strerror or exc}", retryable=True, kind="output"
            ) from None
        return message.key

    def destination(self, message: Message) -> str:
        return "stdout"

    def close(self) -> None:
        pass
