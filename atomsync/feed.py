"""HCM Atom client: builds the protocol's queries and fetches one page at a time.

Walking the pages is protocol logic and lives in `sync`; this module only turns one
(feed, window, page) into a list of entries or a FetchError that says, in one line, what went
wrong and what to check. Nothing here ever logs or raises the password.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from atomsync import __version__, atom
from atomsync.atom import Entry, FeedError
from atomsync.config import FeedConfig, HcmConfig
from atomsync.httputil import host_port, never_connected, os_reason, parse_retry_after
from atomsync.timeutil import format_ms

ATOM_TYPES = ("application/atom+xml", "application/xml", "text/xml")


@dataclass(frozen=True)
class Window:
    """One cycle's read window: `min` exclusive, `max` inclusive (HCM's own semantics)."""

    cursor: str
    min_ms: Optional[int]
    max_ms: int


class FetchError(FeedError):
    """A page could not be fetched or trusted. `kind` feeds metrics; the text is for humans."""

    def __init__(self, kind: str, message: str, retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


def build_query(window: Window, page: int, page_size: int) -> list[tuple[str, str]]:
    """The query string for one page. Never `max-results`: HCM ignores it."""
    query = [
        ("orderBy", f"{window.cursor}:asc"),
        ("page", str(page)),
        ("page-size", str(page_size)),
    ]
    if window.min_ms is not None:
        query.append((f"{window.cursor}-min", format_ms(window.min_ms)))
    query.append((f"{window.cursor}-max", format_ms(window.max_ms)))
    return query


class HcmClient:
    """One keep-alive session for the life of the process."""

    def __init__(self, cfg: HcmConfig, session: Optional[requests.Session] = None) -> None:
        self.cfg = cfg
        self.session = session or requests.Session()
        self.session.auth = (cfg.username, cfg.password)
        self.session.verify = cfg.verify_tls
        self.session.headers.update(
            {"Accept": "application/atom+xml", "User-Agent": f"atomsync/{__version__}"}
        )
        # Retry only failures to connect: nothing reached HCM, so it is always safe, and it
        # hides DNS or SYN hiccups. Statuses and read errors are the cycle's to report, as
        # they are: `read=False` re-raises a read timeout as itself (a spent read budget of 0
        # would turn it into a generic connection error), and with Retry-After ignored a 429
        # or 503 comes back as a response instead of being retried or hidden.
        retry = Retry(
            total=2,
            connect=2,
            read=False,
            status=0,
            other=0,
            redirect=0,
            backoff_factor=0.3,
            respect_retry_after_header=False,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        adapter = HTTPAdapter(
            max_retries=retry, pool_connections=1, pool_maxsize=cfg.max_connections
        )
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def url(self, feed: FeedConfig) -> str:
        return self.cfg.base_url + feed.path

    def fetch_page(
        self, feed: FeedConfig, window: Window, page: int, page_size: Optional[int] = None
    ) -> list[Entry]:
        size = page_size or self.cfg.page_size
        body = self.get(self.url(feed), build_query(window, page, size))
        try:
            return atom.parse(body, feed.cursor)
        except FetchError:
            raise
        except atom.HtmlPageError:
            # Served as a feed (200, an XML content type), yet a sign-in page all the same.
            raise FetchError("login_page", _login_page("an HTML page")) from None
        except FeedError as exc:
            # Same type and kind as every other untrustworthy answer, for logs and metrics.
            raise FetchError("bad_response", str(exc)) from None

    def get(self, url: str, query: list[tuple[str, str]]) -> bytes:
        """GET an Atom document, bounded in time and size; raise FetchError on anything odd."""
        timeout = (self.cfg.connect_timeout_seconds, self.cfg.timeout_seconds)
        try:
            # `verify` per request: requests lets $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE override
            # a session's verify (a CA bundle path, or false) but never a request's. `true`
            # still defers to those variables, as requests always does.
            resp = self.session.get(
                url,
                params=query,
                timeout=timeout,
                stream=True,
                allow_redirects=False,
                verify=self.cfg.verify_tls,
            )
        except requests.exceptions.SSLError as exc:
            raise FetchError(
                "tls",
                f"TLS failed talking to HCM ({os_reason(exc)}): check hcm.verify_tls "
                "(a CA bundle path for a TLS-inspecting proxy)",
            ) from None
        except requests.exceptions.ProxyError as exc:
            raise FetchError(
                "network",
                f"cannot reach HCM through the proxy ({os_reason(exc)}): check HTTPS_PROXY "
                "and NO_PROXY",
            ) from None
        except requests.exceptions.ConnectTimeout:
            raise FetchError(
                "network",
                f"cannot reach HCM at {host_port(url)}: no connection within "
                f"{self.cfg.connect_timeout_seconds:g} s (hcm.connect_timeout_seconds); "
                "check hcm.base_url and that this host may reach it (DNS, firewall, proxy)",
            ) from None
        except requests.exceptions.Timeout:
            raise FetchError(
                "timeout",
                f"HCM did not answer within {self.cfg.timeout_seconds:g} s (hcm.timeout_seconds)",
            ) from None
        except requests.exceptions.RequestException as exc:
            if never_connected(exc):
                message = (
                    f"cannot reach HCM at {host_port(url)} ({os_reason(exc)}): check "
                    "hcm.base_url and that this host may reach it (DNS, firewall, proxy)"
                )
            else:
                message = f"HCM dropped the connection without answering ({os_reason(exc)})"
            raise FetchError("network", message) from None
        with resp:
            _check_status(resp)
            return self._read(resp)

    def _read(self, resp: requests.Response) -> bytes:
        cap = self.cfg.max_response_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _too_big(cap)
        # The read timeout is per socket read; a server trickling bytes could hold a cycle
        # (and a shutdown) forever without this overall deadline.
        started = time.monotonic()
        deadline = started + 2 * self.cfg.timeout_seconds + self.cfg.connect_timeout_seconds
        chunks, total = [], 0
        try:
            for chunk in _arriving(resp, 65536):
                total += len(chunk)
                if total > cap:
                    raise _too_big(cap)
                if time.monotonic() > deadline:
                    raise FetchError(
                        "timeout",
                        "HCM is sending its answer too slowly (over "
                        f"{deadline - started:g} s; hcm.timeout_seconds)",
                    )
                chunks.append(chunk)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise FetchError("network", f"HCM's answer broke off: {os_reason(exc)}") from None
        body = b"".join(chunks)
        if declared.isdigit() and len(body) < int(declared):
            raise FetchError("bad_response", "HCM's answer was cut short")
        return body

    def close(self) -> None:
        self.session.close()


def _arriving(resp: requests.Response, size: int) -> Iterator[bytes]:
    """The body as it arrives, one socket read at a time, so that the caller's deadline is
    checked even while HCM sends a few bytes at a time: `iter_content` (urllib3's `read`)
    blocks until `size` bytes have come, however long that takes. `read1` is urllib3 2.3+;
    older ones fall back to `iter_content`."""
    read1 = getattr(resp.raw, "read1", None)
    if not callable(read1):
        yield from resp.iter_content(chunk_size=size)
        return
    while True:
        chunk = read1(size, decode_content=True)
        if not chunk:
            return
        yield chunk


def _too_big(cap: int) -> FetchError:
    return FetchError(
        "bad_response",
        f"HCM's answer is larger than hcm.max_response_bytes ({cap} bytes): raise it, "
        "or lower hcm.page_size",
    )


def _login_page(what: str) -> str:
    return (
        f"HCM returned a login page ({what}) instead of the feed: check the credentials, "
        "and that the integration user signs in with Basic auth (a local HCM user, not SSO "
        "only)"
    )


def _check_status(resp: requests.Response) -> None:
    status = resp.status_code
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if 300 <= status < 400:
        where = urlsplit(resp.headers.get("Location", "")).hostname or "another page"
        raise FetchError(
            "login_page",
            f"HCM returned a login page (a {status} redirect to {where}) instead of the feed: "
            "check the credentials, and that the integration user signs in with Basic auth "
            "(a local HCM user, not SSO only)",
        )
    if status == 401:
        raise FetchError(
            "auth", "HCM rejected the credentials (401): check hcm.username and the password"
        )
    if status == 403:
        raise FetchError(
            "forbidden",
            "HCM refused access (403): give the user the Human Capital Management "
            "Integration Specialist job role, and enable the feed in Manage HCM Atom Feeds",
        )
    if status == 404:
        raise FetchError(
            "not_found",
            f"HCM has no feed at {urlsplit(resp.url).path} (404): check the feed name, "
            "feeds[].workspace / feeds[].path, and hcm.base_url",
        )
    if status == 429:
        after = parse_retry_after(resp.headers.get("Retry-After"))
        hint = f"; it asks to wait {after:g} s" if after is not None else ""
        raise FetchError("throttled", f"HCM is throttling requests (429){hint}", after)
    if status >= 500:
        after = parse_retry_after(resp.headers.get("Retry-After"))
        answer = f"HCM answered {status} {resp.reason or ''}".rstrip()
        raise FetchError(
            "server",
            f"{answer}: a failure on HCM's side (outage or maintenance); if it persists, "
            "check the pod's status with Oracle",
            after,
        )
    if status != 200:
        raise FetchError("bad_response", f"HCM answered {status} {resp.reason or ''}".rstrip())
    if ctype == "text/html":
        raise FetchError("login_page", _login_page("text/html"))
    if ctype and ctype not in ATOM_TYPES:
        raise FetchError(
            "bad_response",
            f"HCM answered with {ctype}, not an Atom feed: check that the feed's URL is an "
            "/atomservlet/ one (feeds[].path, hcm.base_url)",
        )
