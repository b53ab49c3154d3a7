"""`atomsync check`: is this installation able to work? One line per check, with a hint.

Checks the configuration, the state directory, every feed against HCM with the configured
credentials (one page of one entry each), the OCI signer and topic (GetTopic, which needs
no message to be sent), and the local clock against the servers' Date headers: OCI refuses
requests more than 5 minutes off.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from atomsync import perms
from atomsync.atom import FeedError
from atomsync.config import Config
from atomsync.errors import AtomsyncError
from atomsync.feed import HcmClient, Window
from atomsync.state import FileStore

OK, WARN, FAIL = "ok", "warn", "FAIL"
CLOCK_WARN_S = 30.0
CLOCK_FAIL_S = 300.0  # OCI's allowed skew


@dataclass(frozen=True)
class Result:
    level: str
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.level:<4} {self.name}: {self.detail}"


def run(cfg: Config, now: Callable[[], float] = time.time) -> list[Result]:
    results = [
        Result(
            OK,
            "config",
            f"{cfg.source}: {len(cfg.feeds)} feed(s), publishing with {cfg.publisher.kind}",
        )
    ]
    results += [Result(WARN, "permissions", w) for w in perms.warnings(cfg)]
    results.append(_state(cfg))
    dates: list[str] = []
    results += _hcm(cfg, dates, now)
    results.append(_clock("clock vs HCM", dates, now))
    if cfg.publisher.kind == "oci_notifications":
        results += _oci(cfg, now)
    elif cfg.publisher.kind == "webhook":
        results.append(_webhook(cfg))
    else:
        results.append(Result(OK, "publisher", "stdout: nothing to check"))
    return [r for r in results if r.detail]


def _state(cfg: Config) -> Result:
    directory = cfg.state.dir
    try:
        for feed in cfg.feeds:
            FileStore(directory).load(feed.name)
    except AtomsyncError as exc:
        return Result(
            FAIL,
            "state",
            f"{exc}; restore it, or move it away and set the "
            "watermark with `atomsync watermark FEED --set TIME`",
        )
    probe = directory if directory.exists() else _existing_parent(directory)
    if not os.access(probe, os.W_OK | os.X_OK):
        return Result(FAIL, "state", f"{probe} is not writable by this user; set state.dir")
    kept = sum(1 for f in cfg.feeds if FileStore(directory).path(f.name).exists())
    return Result(
        OK, "state", f"{directory}: writable, {kept} of {len(cfg.feeds)} feeds have state"
    )


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _hcm(cfg: Config, dates: list[str], now: Callable[[], float]) -> list[Result]:
    client = HcmClient(cfg.hcm)

    def keep_date(resp: Any, *args: Any, **kwargs: Any) -> None:
        if resp.headers.get("Date"):
            dates.append(resp.headers["Date"])

    client.session.hooks["response"].append(keep_date)
    out = []
    try:
        for feed in cfg.feeds:
            window = Window(feed.cursor, None, int(now() * 1000))
            try:
                client.fetch_page(feed, window, 1, 1)
            except FeedError as exc:
                out.append(Result(FAIL, f"hcm {feed.name}", str(exc)))
            else:
                out.append(
                    Result(OK, f"hcm {feed.name}", f"{client.url(feed)}: credentials accepted")
                )
    finally:
        client.close()
    return out


def _clock(name: str, dates: list[str], now: Callable[[], float]) -> Result:
    if not dates:
        return Result(OK, name, "")  # nothing answered: the failures above say why
    try:
        server = parsedate_to_datetime(dates[-1]).timestamp()
    except (TypeError, ValueError):
        return Result(WARN, name, f"cannot read the server's Date header {dates[-1]!r}")
    skew = now() - server  # Date has whole seconds: a second either way is noise
    text = f"local clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the server"
    if abs(skew) > CLOCK_FAIL_S:
        return Result(FAIL, name, f"{text}: OCI refuses requests over 5 minutes off; run chrony")
    if abs(skew) > CLOCK_WARN_S:
        return Result(WARN, name, f"{text}: run chrony/ntp")
    return Result(OK, name, f"within {max(1.0, abs(skew)):.0f} s")


def _oci(cfg: Config, now: Callable[[], float]) -> list[Result]:
    from atomsync.publish.ons import CONNECT_TIMEOUT, classify, import_oci, make_signer_config

    pub = cfg.publisher
    try:
        config, signer = make_signer_config(pub)
    except AtomsyncError as exc:
        return [Result(FAIL, "oci signer", str(exc))]
    except Exception as exc:  # principals: metadata service or auth service unreachable
        return [
            Result(
                FAIL,
                "oci signer",
                f"cannot build the {pub.auth} signer ({type(exc).__name__}: {exc}); "
                "instance principals work only on an OCI instance in a matching dynamic group",
            )
        ]
    out = [Result(OK, "oci signer", f"{pub.auth} signer built")]
    oci = import_oci()
    kwargs: dict[str, Any] = {
        "signer": signer,
        "timeout": (CONNECT_TIMEOUT, pub.timeout_seconds),
        "retry_strategy": oci.retry.NoneRetryStrategy(),
        "circuit_breaker_strategy": oci.circuit_breaker.NoCircuitBreakerStrategy(),
    }
    if pub.endpoint:
        kwargs["service_endpoint"] = pub.endpoint
    client = oci.ons.NotificationControlPlaneClient(config, **kwargs)
    endpoint = pub.endpoint or client.base_client.endpoint.rsplit("/20181201", 1)[0]
    topics = sorted({t for t in [pub.topic_id, *(f.topic_id for f in cfg.feeds)] if t})
    dates: list[str] = []
    for topic in topics:
        try:
            resp = client.get_topic(topic)
        except oci.exceptions.ServiceError as exc:
            out.append(
                Result(FAIL, f"topic {_short(topic)}", str(classify(exc, topic, pub.endpoint)))
            )
            if exc.headers and exc.headers.get("date"):
                dates.append(exc.headers["date"])
            continue
        except Exception as exc:
            out.append(Result(FAIL, f"topic {_short(topic)}", f"cannot reach {endpoint}: {exc}"))
            continue
        dates.append(resp.headers.get("date", ""))
        api = (resp.data.api_endpoint or "").rstrip("/")
        name = resp.data.name
        if api and api != endpoint.rstrip("/"):
            out.append(
                Result(
                    WARN,
                    f"topic {_short(topic)}",
                    f"{name!r} found, but its apiEndpoint is {api} while atomsync publishes to "
                    f"{endpoint}: set publisher.endpoint: {api}",
                )
            )
        else:
            out.append(Result(OK, f"topic {_short(topic)}", f"{name!r} found at {endpoint}"))
    out.append(_clock("clock vs OCI", [d for d in dates if d], now))
    return out


def _webhook(cfg: Config) -> Result:
    url = cfg.publisher.url or ""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=5):
            pass
    except OSError as exc:
        return Result(
            FAIL, "webhook", f"cannot connect to {parts.hostname}:{port}: {exc.strerror or exc}"
        )
    # A test POST would deliver a fake event downstream, so only the connection is checked.
    return Result(OK, "webhook", f"{parts.hostname}:{port} accepts connections (nothing was sent)")


def _short(ocid: str) -> str:
    return ocid if len(ocid) <= 40 else ocid[:20] + "…" + ocid[-12:]
