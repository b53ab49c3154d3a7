"""Webhook sink: POST the message-contract JSON to a downstream REST endpoint.

Headers (design.md §3): Content-Type, X-Atomsync-Event-Id, X-Atomsync-Signature
(`sha256=<hex HMAC-SHA256 of the exact body bytes>`, when a secret is set) and
Authorization: Bearer (when a token is set). Any 2xx is accepted.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Optional
from urllib.parse import urlsplit

import requests

from atomsync import __version__
from atomsync.config import PublisherConfig
from atomsync.httputil import os_reason, parse_retry_after
from atomsync.message import Message
from atomsync.publish import SinkError

CONNECT_TIMEOUT = 5.0
ERROR_SNIPPET_BYTES = 200  # of an error answer's body, quoted in the error


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
        # For messages: scheme, host and port only; the URL's path, query or userinfo may
        # hold a credential.
        parts = urlsplit(cfg.url)
        self.where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")

    def destination(self, message: Message) -> str:
        """Every event goes to the one URL: one rate for all feeds."""
        return self.url

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
        except requests.exceptions.ConnectTimeout:
            raise SinkError(
                f"cannot connect to the webhook at {self.where} within {CONNECT_TIMEOUT:g} s",
                retryable=True,
                kind="network",
            ) from None
        except requests.exceptions.Timeout:
            raise SinkError(
                f"webhook at {self.where} did not answer within {self.cfg.timeout_seconds:g} s; "
                "it may have accepted the event, so retrying can deliver it twice",
                retryable=True,
                kind="timeout",
            ) from None
        except requests.exceptions.RequestException as exc:
            # Only the OS's reason: requests' own text repeats the URL, query string and all.
            raise SinkError(
                f"cannot reach the webhook at {self.where}: {os_reason(exc)}",
                retryable=True,
                kind="network",
            ) from None
        with resp:
            status = resp.status_code
            if 200 <= status < 300:
                return resp.headers.get("X-Request-Id") or str(status)
            text = f"webhook answered {status} {resp.reason or ''}".rstrip()
            after = parse_retry_after(resp.headers.get("Retry-After"))
            if status in (408, 425, 429) or status >= 500:
                kind = "throttled" if status == 429 else "server"
                raise SinkError(text, retryable=True, kind=kind, retry_after=after)
            if status in (401, 403):
                raise SinkError(
                    f"{text}: check publisher.bearer_token / publisher.hmac_secret",
                    retryable=True,
                    kind="auth",
                    config_level=True,
                )
            if 300 <= status < 400:
                location = resp.headers.get("Location", "").split("?", 1)[0]
                to = f" to {location}" if location else ""
                raise SinkError(
                    f"{text} (a redirect{to}, not followed: a POST must not be re-sent "
                    "somewhere else): check publisher.url",
                    retryable=True,
                    kind="not_found",
                    config_level=True,
                )
            if status in (404, 405):
                raise SinkError(
                    f"{text}: check publisher.url",
                    retryable=True,
                    kind="not_found",
                    config_level=True,
                )
            detail = self._detail(resp)
            raise SinkError(f"{text}{detail}", retryable=False, kind="rejected")

    def _detail(self, resp: requests.Response) -> str:
        """The start of an error answer, which usually says what was wrong with the event.

        Some servers echo the request; secrets are cut out before the text goes anywhere.
        """
        # All of it (requests has read it anyway): a cut before redacting could leave half
        # a secret behind.
        text = " ".join(resp.content.decode("utf-8", "replace").split())
        for secret in (self.cfg.hmac_secret, self.cfg.bearer_token):
            if secret:
                text = text.replace(secret, "[redacted]")
        if not text:
            return ""
        if len(text) > ERROR_SNIPPET_BYTES:
            text = text[: ERROR_SNIPPET_BYTES - 3] + "..."
        return f": {text}"

    def close(self) -> None:
        self.session.close()
