"""Sinks: where messages go. One small interface, three implementations, two wrappers.

A sink either returns a receipt (the event is accepted) or raises SinkError, which says
whether trying again can help (`retryable`) and whether the problem is the set-up rather
than the message (`config_level`: 401, unknown topic; never dead-lettered, never skipped).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Optional, Protocol

from atomsync.config import Config
from atomsync.message import Message
from atomsync.pacing import TokenBucket

log = logging.getLogger(__name__)

# Interruptible sleep: returns False when the process was asked to stop meanwhile.
Sleeper = Callable[[float], bool]


class SinkError(Exception):
    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        kind: str = "error",
        retry_after: Optional[float] = None,
        config_level: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.kind = kind
        self.retry_after = retry_after
        self.config_level = config_level


class Interrupted(Exception):
    """A stop was requested while waiting to publish; nothing was sent."""


class Sink(Protocol):
    name: str
    # Largest serialised request the destination takes (None: no limit to trim to).
    max_request_bytes: Optional[int]

    def publish(self, message: Message) -> str: ...

    def close(self) -> None: ...

    # Optional: `destination(message) -> str`, where the message really goes (its topic, the
    # URL). PacedSink keeps one rate per destination; without it, one per message.topic_id.


def _plain_sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return True


class PacedSink:
    """Holds each destination to its rate with a token bucket.

    The destination is what the inner sink says it is (`destination(message)`: the topic a
    message really goes to, the webhook URL), so that a feed naming the default topic
    explicitly shares that topic's bucket instead of doubling its rate.
    """

    def __init__(self, inner: Sink, rate_per_minute: float, sleep: Sleeper = _plain_sleep) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_request_bytes = inner.max_request_bytes
        self.rate = rate_per_minute
        self.sleep = sleep
        self.buckets: dict[str, TokenBucket] = {}
        self.lock = threading.Lock()

    def bucket(self, destination: str) -> TokenBucket:
        with self.lock:
            if destination not in self.buckets:
                self.buckets[destination] = TokenBucket(self.rate)
            return self.buckets[destination]

    def destination(self, message: Message) -> str:
        resolve: Any = getattr(self.inner, "destination", None)
        if callable(resolve):
            return str(resolve(message))
        return message.topic_id or ""

    def publish(self, message: Message) -> str:
        bucket = self.bucket(self.destination(message))
        delay = bucket.reserve()
        if delay > 0 and not self.sleep(delay):
            bucket.refund()
            raise Interrupted()
        return self.inner.publish(message)

    def close(self) -> None:
        self.inner.close()


class RetryingSink:
    """Retries transient failures of one message a few times within the cycle.

    Waits honour Retry-After and otherwise grow exponentially with full jitter. A Retry-After
    longer than `max_delay` ends the attempts at once: retrying sooner than the service asked
    only earns another refusal, and the per-feed back-off (which honours it) takes over.
    Set-up problems (`config_level`) are not retried here either: they need a person.
    """

    def __init__(
        self,
        inner: Sink,
        *,
        attempts: int = 3,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        sleep: Sleeper = _plain_sleep,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_request_bytes = inner.max_request_bytes
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.rng = rng or random.Random()

    def publish(self, message: Message) -> str:
        attempt = 1
        while True:
            try:
                return self.inner.publish(message)
            except SinkError as exc:
                if not exc.retryable or exc.config_level or attempt >= self.attempts:
                    raise
                if exc.retry_after is not None and exc.retry_after > self.max_delay:
                    raise
                delay = self.delay(attempt, exc.retry_after)
                log.warning(
                    "%s: %s; retrying %s in %.1f s (attempt %d of %d)",
                    message.feed,
                    exc,
                    message.entry_id,
                    delay,
                    attempt + 1,
                    self.attempts,
                )
                if not self.sleep(delay):
                    raise Interrupted() from exc
                attempt += 1

    def delay(self, attempt: int, retry_after: Optional[float]) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        return self.rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))

    def close(self) -> None:
        self.inner.close()


def build_sink(cfg: Config) -> Sink:
    """The configured sink, bare (no pacing or retry). Imports only what that kind needs."""
    kind = cfg.publisher.kind
    if kind == "oci_notifications":
        from atomsync.publish.ons import OnsSink

        return OnsSink(cfg.publisher)
    if kind == "webhook":
        from atomsync.publish.webhook import WebhookSink

        return WebhookSink(cfg.publisher)
    from atomsync.publish.stdout import StdoutSink

    return StdoutSink()


def wrap(sink: Sink, cfg: Config, sleep: Sleeper) -> Sink:
    """Pacing inside retries, so that every attempt spends a token."""
    paced = PacedSink(sink, cfg.publisher.max_messages_per_minute, sleep)
    return RetryingSink(paced, max_delay=min(60.0, cfg.poll.backoff_max_seconds), sleep=sleep)
