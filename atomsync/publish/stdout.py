"""Stdout sink: one JSON line per event, for piping into other tools and for debugging."""

from __future__ import annotations

import json
import sys
import threading
from typing import Optional, TextIO

from atomsync.message import Message


class StdoutSink:
    name = "stdout"
    max_request_bytes: Optional[int] = None

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream
        self.lock = threading.Lock()  # one whole line per event, even from several feeds

    def publish(self, message: Message) -> str:
        line = json.dumps({"title": message.title, "body": message.body}, ensure_ascii=False)
        out = self.stream or sys.stdout
        with self.lock:
            out.write(line + "\n")
            out.flush()
        return message.key

    def close(self) -> None:
        pass
