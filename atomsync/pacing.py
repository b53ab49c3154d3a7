"""Pacing: a token bucket per destination, so atomsync stays under a topic's rate instead
of running into 429s (OCI Notifications takes about 60 messages a minute per topic).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

# Send at 99 % of the configured rate: the service counts arrivals, which jitter by a few
# milliseconds against our send times, and a window exactly at the limit would then see an
# occasional 429. One per cent is 600 ms of slack per minute.
SAFETY = 0.99


class TokenBucket:
    """Tokens refill continuously at `rate_per_minute`; at most `burst` are stored.

    Thread-safe: feeds publishing to the same topic from several threads share one bucket.
    """

    def __init__(
        self,
        rate_per_minute: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate_per_minute * SAFETY / 60.0  # tokens per second
        self.burst = max(1.0, burst)
        self.clock = clock
        self.tokens = self.burst
        self.stamp = clock()
        self.lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token; return how many seconds to wait before using it (0 = now).

        Reserving (rather than polling) keeps the order of waiting callers and the long-run
        rate exact, whatever the sleeps overshoot by.
        """
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= 1.0
            if self.tokens >= 0:
                return 0.0
            return -self.tokens / self.rate

    def refund(self) -> None:
        """Give back a token that was reserved but not used (a stop while waiting)."""
        with self.lock:
            self.tokens = min(self.burst, self.tokens + 1.0)
