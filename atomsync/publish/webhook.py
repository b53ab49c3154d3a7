"""Webhook sink: POST the message-contract JSON to a downstream REST endpoint.

Headers (design.md §3): Content-Type, X-Atomsync-Event-Id, X-Atomsync-Signature
(`sha256=<hex HMAC-SHA256 of the exact body bytes>`, when a secret is set) and
Authorization: Bearer (when a token is set). Any 2xx is accepted.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Optional

import requests

from atomsync import __version__
from atomsync.config import PublisherConfig
from atomsync.message import Message
from atomsync.publish import SinkError

CONNECT_TIMEOUT = 5.0


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSink:
    name = "webhook"
    max_request_bytes: Optional[int] = None

    def __init__(self, cfg: PublisherConfig, session: Optional[requests.Session] = None) -> None:
        assert cfg.url is not None
        self.url = cfg.url
        self.cfg = cfg
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"atomsync/{__version__}"

    def publish(self, message: Message) -> str:
        body = message.body_text().encode("utf-8")
        headers = {"Content-Type": "application/json", "X-Atomsync-Event-Id": message.entry_id}
        if self.cfg.hmac_secret:
            headers["X-Atomsync-Signature"] = signature(self.cfg.hmac_secret, body)
        if self.cfg.bearer_token:
            headers["Authorization"] = f"Bearer {self.cfg.bearer_token}"
        try:
            resp = self.session.post(
                self.url,
                data=body,
                headers=headers,
                timeout=(CONNECT_TIMEOUT, self.cfg.timeout_seconds),
                allow_redirects=False,
            )
        except requests.exceptions.Timeout:
            raise SinkError(
                f"webhook did not answer within {self.cfg.timeout_seconds:g} s",
                retryable=True,
                kind="timeout",
            ) from None
        except requests.exceptions.RequestException as exc:
            raise SinkError(
                f"cannot reach the webhook: {type(exc).__name__}", retryable=True, kind="network"
            ) from None
        with resp:
            status = resp.status_code
            if 200 <= status < 300:
                return resp.headers.get("X-Request-Id") or str(status)
            text = f"webhook answered {status} {resp.reason or ''}".rstrip()
            after = _retry_after(resp.headers.get("Retry-After"))
            if status in (408, 425, 429) or status >= 500:
                raise SinkError(text, retryable=True, kind="server", retry_after=after)
            if status in (401, 403):
                raise SinkError(
                    f"{text}: check publisher.bearer_token / publisher.hmac_secret",
                    retryable=True,
                    kind="auth",
                    config_level=True,
                )
            if status in (404, 405) or 300 <= status < 400:
                raise SinkError(
                    f"{text}: check publisher.url",
                    retryable=True,
                    kind="not_found",
                    config_level=True,
                )
            raise SinkError(text, retryable=False, kind="rejected")

    def close(self) -> None:
        self.session.close()


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
