"""A loopback HTTP server that behaves like Oracle HCM Cloud's Atom feeds.

It reproduces what hcm-atom-feeds.md §12 lists: both URL prefixes and the single-entry URL,
Basic auth, exclusive `-min` / inclusive `-max` bounds on either cursor, newest-first default
order, 1-based paging of 10, hidden future-dated entries, the archive feed, and injectable
faults. Ties between equal timestamps come back in a stable order that is deliberately not
the id order, so clients cannot come to depend on an order Oracle does not document.

A small JSON admin API under `/_sim/` lets a separately started simulator be driven.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import socket
import ssl
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Callable, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit
from xml.sax.saxutils import escape

from atomsync import catalog
from atomsync.sim.hcmdata import EntryFactory, Person, SimEntry
from atomsync.timeutil import format_ms, parse_timestamp

_log = logging.getLogger("atomsync.sim.hcm")

ATOM_TYPE = "application/atom+xml;charset=UTF-8"
PREFIXES = ("/hcmRestApi/atomservlet/", "/hcmCoreApi/atomservlet/")
DEFAULT_PAGE_SIZE = 10
LOGIN_URL = (
    "https://login.example.com/oauth2/authorize?client_id=fusion&response_type=code"
    "&redirect_uri=https%3A%2F%2Fpod.fa.example.com%2Fhcmui%2F"
)

# Fault kinds and the parameters (with defaults) each accepts.
FAULTS: dict[str, dict[str, float]] = {
    "401": {},
    "403": {},
    "404": {},
    "500": {},
    "503": {},
    "429": {"retry_after": 1},
    "slow": {"delay": 2.0},
    "trickle": {"interval": 0.05},
    "reset": {},
    "login_page": {},
    "redirect_login": {},
    "truncated": {},
    "bad_json": {},
    "wrong_content_type": {},
    "huge": {"size_mb": 20, "chunked": 0},
    "billion_laughs": {},
    # Hostile documents (docs/hostile-input.md): an external entity naming a local file; one
    # entity referenced `refs` times (`hidden`: its DTD inside a comment, which only
    # feedparser's DOCTYPE rewrite finds); a sign-in page sent as a feed; entries without an
    # <id> or with an <updated> that is not ISO 8601 (the last entry of the page).
    "xxe": {},
    "quadratic": {"kb": 50, "refs": 5000, "hidden": 0},
    "login_page_atom": {},
    "entry_without_id": {},
    "unreadable_updated": {},
}

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Oracle Cloud Account Sign In</title></head>
<body><form method="post" action="https://login.example.com/oam/server/auth_cred_submit">
<h1>Sign In</h1>
<label>User ID <input name="userid" type="text"></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign In</button>
</form></body></html>
"""

_LOLS = "".join(
    f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
    for i in range(1, 10)
)
XXE_FILE = "/etc/passwd"
_XXE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE feed [\n'
    f' <!ENTITY xxe SYSTEM "file://{XXE_FILE}">\n]>\n'
)

_BILLION_LAUGHS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE feed [\n <!ENTITY lol "lol">\n'
    + _LOLS
    + ']>\n<feed xmlns="http://www.w3.org/2005/Atom"><title type="text">&lol9;</title></feed>\n'
)

# Text content must survive an XML parser unchanged: quotes as Oracle sends them, and CR
# as a reference because parsers fold a literal CR into LF.
_TEXT_ENTITIES = {'"': "&quot;", "\r": "&#13;"}


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator saw it; `status` is 0 when no response was sent."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    user: str | None
    fault: str | None = None


@dataclass
class _Fault:
    kind: str
    remaining: int
    collection: str | None
    params: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Query:
    updated_min: int | None
    updated_max: int | None
    published_min: int | None
    published_max: int | None
    order: str  # "updated" / "published", with "-" in front for newest first
    page: int
    page_size: int
    archive: bool


class _BadRequest(Exception):
    pass


def _tie(entry: SimEntry) -> tuple[int, int]:
    # Stable across requests but unrelated to the id's sort order (§4: ties are undefined).
    return (zlib.crc32(entry.id.encode("utf-8")), -entry.seq)


def _x(text: str) -> str:
    return escape(text, _TEXT_ENTITIES)


class HcmSimulator:
    """Oracle HCM Atom feeds on loopback; see the module docstring."""

    def __init__(
        self,
        *,
        username: str = "INTEGRATION_USER",
        password: str = "sim-password",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        latency: Mapping[str, float] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.username = username
        # Serve HTTPS with this context (its certificate must name `host`); None: plain HTTP.
        self.ssl_context = ssl_context
        self.password = password
        self.host = host
        self.port = port
        self.clock = clock
        self.factory = EntryFactory(seed)
        # Users who authenticate with `password` but lack the integration role (403).
        self.forbidden_users: set[str] = set()
        self.on_request: Callable[[RequestRecord], None] | None = None
        self._lock = threading.Lock()
        self._live: list[SimEntry] = []
        self._archived: list[SimEntry] = []
        self._seq = 0
        self._faults: list[_Fault] = []
        self._latency: dict[str, float] = {}
        self._requests: list[RequestRecord] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for collection, seconds in (latency or {}).items():
            self.set_latency(collection, seconds)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the HCM simulator is not started")
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> HcmSimulator:
        """Serve in a daemon thread; after stop() it starts again on the same port."""
        if self._server is not None:
            raise RuntimeError("the HCM simulator is already running")
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.sim = self
        if self.ssl_context is not None:
            # The handshake happens on the handler's first read, in its own thread, so a
            # client that fails it (an untrusted certificate) never stalls the accept loop.
            server.socket = self.ssl_context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"hcm-sim-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop at once: slow faults are cut short and open keep-alive connections closed."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> HcmSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- entries ------------------------------------------------------------------------

    def now_ms(self) -> int:
        # round, not int: a clock of ms / 1000 must give back exactly ms.
        return round(self.clock() * 1000)

    def add(self, *entries: SimEntry) -> None:
        """Publish entries to the live feed; they are visible to the next request."""
        with self._lock:
            for entry in entries:
                self._seq += 1
                entry.seq = self._seq
                self._live.append(entry)

    def add_archived(self, *entries: SimEntry) -> None:
        """Put entries in the archive feed, which only `archive=yes` serves."""
        with self._lock:
            for entry in entries:
                self._seq += 1
                entry.seq = self._seq
                self._archived.append(entry)

    def make_entry(
        self,
        collection: str,
        *,
        updated_ms: int | None = None,
        published_ms: int | None = None,
        key: str | None = None,
        dml: str = "INSERT",
        content: str | None = None,
        person: Person | None = None,
    ) -> SimEntry:
        """An entry from the factory (not yet added); `updated_ms` defaults to now."""
        updated = self.now_ms() if updated_ms is None else updated_ms
        with self._lock:  # the factory's random state is shared between threads
            return self.factory.make(
                collection,
                updated_ms=updated,
                published_ms=published_ms,
                key=key,
                dml=dml,
                content=content,
                person=person,
            )

    def add_entry(
        self,
        collection: str,
        *,
        updated_ms: int | None = None,
        published_ms: int | None = None,
        key: str | None = None,
        dml: str = "INSERT",
        content: str | None = None,
        person: Person | None = None,
    ) -> SimEntry:
        entry = self.make_entry(
            collection,
            updated_ms=updated_ms,
            published_ms=published_ms,
            key=key,
            dml=dml,
            content=content,
            person=person,
        )
        self.add(entry)
        return entry

    def add_hires(
        self, n: int, *, updated_ms: int | None = None, spacing_ms: int = 0
    ) -> list[SimEntry]:
        """`n` newhire entries, `spacing_ms` apart (0: an equal-timestamp run)."""
        base = self.now_ms() if updated_ms is None else updated_ms
        hires = [self.make_entry("newhire", updated_ms=base + i * spacing_ms) for i in range(n)]
        self.add(*hires)
        return hires

    def purge(self, before_ms: int, *, archive: bool = False) -> int:
        """Drop live entries updated before `before_ms` (moved to the archive if asked)."""
        with self._lock:
            gone = [e for e in self._live if e.updated_ms < before_ms]
            self._live = [e for e in self._live if e.updated_ms >= before_ms]
            if archive:
                self._archived.extend(gone)
        return len(gone)

    def entries(self, collection: str | None = None, *, archived: bool = False) -> list[SimEntry]:
        """Entries in insertion order, optionally of one collection."""
        name = None if collection is None else _canonical(collection)
        with self._lock:
            pool = self._archived if archived else self._live
            return [e for e in pool if name is None or e.collection == name]

    # -- requests and faults ------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Feed requests so far (admin calls excluded), oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def inject(
        self, fault: str, *, times: int = 1, collection: str | None = None, **params: object
    ) -> None:
        """Make the next `times` feed requests (of `collection`, if given) fail as `fault`.

        Faults queue up in FIFO order. See FAULTS for the kinds and their parameters.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        if times < 1:
            raise ValueError("times must be at least 1")
        allowed = FAULTS[fault]
        unknown = set(params) - set(allowed)
        if unknown:
            raise ValueError(f"fault {fault!r} takes no parameter {sorted(unknown)}")
        values = dict(allowed)
        for param, value in params.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError(f"{param} must be a number")
            values[param] = float(value)
        name = None if collection is None else _canonical(collection)
        with self._lock:
            self._faults.append(_Fault(fault, times, name, values))

    def set_latency(self, collection: str, seconds: float) -> None:
        """Answer every feed request of `collection` `seconds` late, like a pod whose feeds
        differ in cost (0 removes the delay). Unlike the `slow` fault it never runs out."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        name = _canonical(collection)
        with self._lock:
            if seconds:
                self._latency[name] = float(seconds)
            else:
                self._latency.pop(name, None)

    def clear_faults(self) -> int:
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
        return count

    def pending_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"fault": f.kind, "times": f.remaining, "feed": f.collection, **f.params}
                for f in self._faults
            ]

    # -- internals used by the handler --------------------------------------------------

    def _take_fault(self, collection: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.collection in (None, collection):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _select(self, collection: str, query: _Query) -> list[SimEntry]:
        now = self.now_ms()
        by_published = query.published_min is not None or query.published_max is not None
        with self._lock:
            pool = list(self._archived if query.archive else self._live)
        chosen = []
        for e in pool:
            if e.collection != collection:
                continue
            # Future-dated (§9): hidden until it takes effect, or until asked for by an
            # updated-max at or after it (the check against updated-max follows below).
            future = not query.archive and e.updated_ms > now
            if future and not by_published and query.updated_max is None:
                continue
            if not _within(e.updated_ms, query.updated_min, query.updated_max):
                continue
            if not _within(e.published_ms, query.published_min, query.published_max):
                continue
            chosen.append(e)
        attr = query.order.lstrip("-")
        if query.order.startswith("-"):
            chosen.sort(key=lambda e: (-_cursor(e, attr), _tie(e)))
        else:
            chosen.sort(key=lambda e: (_cursor(e, attr), _tie(e)))
        return chosen

    def _single(self, collection: str, key: str, archive: bool) -> SimEntry | None:
        with self._lock:
            pool = self._archived if archive else self._live
            found = [e for e in pool if e.collection == collection and e.key == key]
        return max(found, key=lambda e: (e.updated_ms, e.seq)) if found else None


def _cursor(entry: SimEntry, attr: str) -> int:
    return entry.published_ms if attr == "published" else entry.updated_ms


def _within(value: int, low: int | None, high: int | None) -> bool:
    # HCM's bounds: the lower one exclusive, the upper one inclusive (§3).
    return (low is None or value > low) and (high is None or value <= high)


def _canonical(name: str) -> str:
    coll = catalog.lookup(name)
    if coll is None:
        raise ValueError(f"unknown HCM collection {name!r}")
    return coll.name


def _route(path: str) -> tuple[catalog.Collection, str | None] | None:
    """(collection, key or None) for a feed URL, or None when nothing lives there."""
    prefix = next((p for p in PREFIXES if path.startswith(p)), None)
    if prefix is None:
        return None
    parts = [unquote(p) for p in path[len(prefix) :].rstrip("/").split("/")]
    if len(parts) not in (2, 3):
        return None
    coll = catalog.lookup(parts[1])
    if coll is None or coll.workspace != parts[0]:
        return None
    key = parts[2] if len(parts) == 3 else None
    if key == "":
        return None
    return coll, key


def _parse_query(query: dict[str, str]) -> _Query:
    def stamp(name: str) -> int | None:
        raw = query.get(name)
        if raw is None:
            return None
        try:
            return parse_timestamp(raw)
        except (ValueError, OverflowError) as exc:
            raise _BadRequest(f"{name}: not an ISO 8601 timestamp: {raw!r}") from exc

    def number(name: str, default: int) -> int:
        raw = query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise _BadRequest(f"{name}: not a number: {raw!r}") from exc
        if value < 1:
            raise _BadRequest(f"{name}: must be at least 1")
        return value

    order_raw = query.get("orderBy")
    if order_raw is None:
        order = "-updated"
    else:
        attr, _, direction = order_raw.partition(":")
        if attr not in ("updated", "published") or direction not in ("", "asc", "desc"):
            raise _BadRequest(f"orderBy: unsupported value {order_raw!r}")
        order = ("-" if direction == "desc" else "") + attr
    return _Query(
        updated_min=stamp("updated-min"),
        updated_max=stamp("updated-max"),
        published_min=stamp("published-min"),
        published_max=stamp("published-max"),
        order=order,
        page=number("page", 1),
        page_size=number("page-size", DEFAULT_PAGE_SIZE),
        archive=query.get("archive", "").lower() == "yes",
    )


def _basic_user(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _error_page(status: int, detail: str = "") -> bytes:
    reason = _REASONS.get(status, "Error")
    body = f"<html><head><title>{status} {reason}</title></head><body><h1>{reason}</h1>"
    if detail:
        body += f"<p>{_x(detail)}</p>"
    return (body + "</body></html>\n").encode("utf-8")


def render_feed(
    base_url: str,
    coll: catalog.Collection,
    entries: Iterable[SimEntry],
    *,
    now_ms: int,
    links: dict[str, str] | None = None,
    content_of: Callable[[SimEntry], str] | None = None,
) -> str:
    """A feed document in the shape of Oracle's (hcm-atom-feeds.md §6)."""
    feed_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{base_url}/{coll.workspace}/{coll.name}")
    out = [
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        '<feed xmlns="http://www.w3.org/2005/Atom" xmlns:app="http://www.w3.org/2007/app">\n',
        f'  <title type="text">{_x(coll.feed_title)}</title>\n',
        f'  <subtitle type="text">{_x(coll.feed_title.replace(" ", ""))}</subtitle>\n',
        f"  <id>urn:uuid:{feed_id}</id>\n",
        f"  <updated>{format_ms(now_ms)}</updated>\n",
        "  <author><name>SEED_DATA_FROM_APPLICATION</name></author>\n",
    ]
    for rel, href in (links or {}).items():
        out.append(f'  <link href="{_x(href)}" rel="{rel}"/>\n')
    edit_base = f"{base_url}/hcmRestApi/atomservlet/{coll.workspace}/{coll.name}/"
    for e in entries:
        content = e.content if content_of is None else content_of(e)
        out.append("  <entry>\n")
        out.append(f'    <link href="{_x(edit_base + e.key)}" rel="edit"/>\n')
        out.append(f"    <id>{_x(e.id)}</id>\n")
        out.append(f'    <title type="text">{_x(e.title)}</title>\n')
        out.append(f"    <updated>{format_ms(e.updated_ms)}</updated>\n")
        out.append(f"    <author><name>{_x(e.author)}</name></author>\n")
        out.append(f'    <summary type="text">{_x(e.summary)}</summary>\n')
        out.append(f"    <published>{format_ms(e.published_ms)}</published>\n")
        if e.related is not None:
            href = base_url + e.related if e.related.startswith("/") else e.related
            out.append(f'    <link href="{_x(href)}" rel="related" reltype="workers"/>\n')
        out.append(f'    <content type="text">{_x(content)}</content>\n')
        out.append("  </entry>\n")
    out.append("</feed>\n")
    return "".join(out)


def _xxe(text: str, params: dict[str, float]) -> str:
    body = text.split("\n", 1)[1]  # after the XML declaration
    for tag in ('<title type="text">', '<content type="text">'):
        body = body.replace(tag, tag + "&xxe;")
    return _XXE + body


def _quadratic(text: str, params: dict[str, float]) -> str:
    value = "A" * int(params["kb"] * 1024)
    dtd = f'<!DOCTYPE feed [\n<!ENTITY a "{value}">\n]>\n'
    if params["hidden"]:
        # An XML comment to every XML parser; feedparser's rewrite still finds the entity.
        dtd = f'<!--\n<!DOCTYPE feed>\n<!ENTITY a "{value}">\n-->\n'
    decl, body = text.split("\n", 1)
    tag = '<title type="text">'
    body = body.replace(tag, tag + "&a;" * int(params["refs"]), 1)
    return f"{decl}\n{dtd}{body}"


def _last_entry(text: str, element: str, replacement: str) -> str:
    """The page with the last entry's `element` line replaced (entries indent by 4)."""
    start = text.rfind(f"    <{element}>")
    if start < 0:
        return text
    end = text.index("\n", start) + 1
    return text[:start] + replacement + text[end:]


_HOSTILE: dict[str, Callable[[str, dict[str, float]], str]] = {
    "xxe": _xxe,
    "quadratic": _quadratic,
    "entry_without_id": lambda text, _: _last_entry(text, "id", ""),
    "unreadable_updated": lambda text, _: _last_entry(
        text, "updated", "    <updated>Mon, 04 Mar 2024 09:15:22 GMT</updated>\n"
    ),
}


def _break_json(text: str) -> str:
    # A missing quote, the typo found in Oracle's own templates (§7).
    return text.replace('"', "", 1) if '"' in text else text + "{"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    sim: HcmSimulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-answer are routine in fault tests; keep stderr quiet.
        _log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Oracle-HTTP-Server"
    timeout = 60  # an idle keep-alive connection is dropped after this many seconds
    # Headers and body go out in separate writes; with Nagle on, delayed ACKs add 40 ms.
    disable_nagle_algorithm = True

    # The record of the feed request being answered; it is stored just before the first
    # byte of the answer goes out, so a client never sees an answer the log lacks.
    _pending: RequestRecord | None = None

    @property
    def sim(self) -> HcmSimulator:
        return cast(_Server, self.server).sim

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)

    def setup(self) -> None:
        super().setup()
        self.sim._track(self.connection, True)
        if self.sim._stopping.is_set():  # accepted just as stop() swept the connections
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.sim._track(self.connection, False)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # -- plumbing -----------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self._pending = None
        body = self._read_body()
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            if parts.path.startswith("/_sim/"):
                self._admin(method, parts.path, query, body)
            else:
                self._feed(method, parts.path, query)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            return self.rfile.read(int(length))
        except ValueError:
            self.close_connection = True
            return b""

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/html;charset=UTF-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self._log_request_as(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _log_request_as(self, status: int) -> None:
        if self._pending is not None:
            self.sim._record(replace(self._pending, status=status))
            self._pending = None

    def _json(self, status: int, value: Any) -> None:
        body = json.dumps(value, ensure_ascii=False).encode("utf-8")
        self._send(status, body, "application/json")

    def _reset(self) -> None:
        """Drop the connection with a TCP RST and no response."""
        self._log_request_as(0)
        self.close_connection = True
        conn = self.connection
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # detach() and close the descriptor now: a plain close() would wait for the
        # handler's file objects and the server's shutdown(SHUT_WR) would send a FIN first.
        fd = conn.detach()
        if fd >= 0:
            socket.close(fd)

    # -- feed requests ------------------------------------------------------------------

    def _feed(self, method: str, path: str, query: dict[str, str]) -> None:
        sim = self.sim
        creds = _basic_user(self.headers.get("Authorization"))
        record = RequestRecord(method, path, query, 0, creds[0] if creds else None)
        self._pending = record
        fault: _Fault | None = None
        try:
            hook = sim.on_request
            if hook is not None:
                try:
                    hook(record)
                except Exception:
                    _log.exception("on_request hook failed")
                    self._send(500, _error_page(500, "simulator hook failed"))
                    return
            route = _route(path)
            if route is not None and method == "GET":
                fault = sim._take_fault(route[0].name)
                if fault is not None:
                    self._pending = replace(record, fault=fault.kind)
            if fault is not None and self._plain_fault(fault):
                return
            known = creds is not None and (
                creds[0] == sim.username or creds[0] in sim.forbidden_users
            )
            if creds is None or not known or creds[1] != sim.password:
                realm = 'Basic realm="Oracle Fusion Applications"'
                self._send(401, _error_page(401), headers={"WWW-Authenticate": realm})
                return
            if creds[0] in sim.forbidden_users:
                self._send(403, _error_page(403, "The user does not have the required role."))
                return
            if route is None:
                self._send(404, _error_page(404))
                return
            if method != "GET":
                self._send(405, _error_page(405), headers={"Allow": "GET"})
                return
            delay = sim._latency.get(route[0].name, 0.0)
            if delay and sim._stopping.wait(delay):
                self.close_connection = True  # the simulator is stopping: no answer
                return
            self._answer(route[0], route[1], query, fault)
        finally:
            self._log_request_as(0)  # no answer was sent

    def _plain_fault(self, fault: _Fault) -> bool:
        """Serve a fault that replaces the answer; False for those that alter it."""
        kind = fault.kind
        if kind in ("401", "403", "404", "500", "503"):
            status = int(kind)
            headers = {"WWW-Authenticate": 'Basic realm="Oracle Fusion Applications"'}
            self._send(status, _error_page(status), headers=headers if status == 401 else None)
        elif kind == "429":
            wait = fault.params["retry_after"]
            retry = str(int(wait)) if wait == int(wait) else str(wait)
            self._send(429, _error_page(429), headers={"Retry-After": retry})
        elif kind == "slow":
            if self.sim._stopping.wait(fault.params["delay"]):
                self.close_connection = True  # the simulator is stopping: no answer
                return True
            return False
        elif kind == "reset":
            self._reset()
        elif kind == "login_page":
            self._send(200, _LOGIN_PAGE.encode("utf-8"), "text/html; charset=UTF-8")
        elif kind == "redirect_login":
            self._send(302, b"", headers={"Location": LOGIN_URL})
        elif kind == "wrong_content_type":
            self._send(200, b'{"items": []}', "application/json")
        elif kind == "billion_laughs":
            self._send(200, _BILLION_LAUGHS.encode("utf-8"), ATOM_TYPE)
        elif kind == "login_page_atom":
            self._send(200, _LOGIN_PAGE.encode("utf-8"), ATOM_TYPE)
        else:
            return False
        return True

    def _answer(
        self,
        coll: catalog.Collection,
        key: str | None,
        query: dict[str, str],
        fault: _Fault | None,
    ) -> None:
        sim = self.sim
        try:
            q = _parse_query(query)
        except _BadRequest as exc:
            self._send(400, _error_page(400, str(exc)))
            return
        links: dict[str, str] = {}
        if key is not None:
            single = sim._single(coll.name, key, q.archive)
            if single is None:
                self._send(404, _error_page(404))
                return
            page = [single]
        else:
            chosen = sim._select(coll.name, q)
            start = (q.page - 1) * q.page_size
            page = chosen[start : start + q.page_size]
            links = self._links(query, q, more=len(chosen) > start + q.page_size)
        kind = fault.kind if fault is not None else None
        if kind == "huge" and fault is not None:
            chunked = bool(fault.params["chunked"])
            self._stream_huge(coll, page[:1], fault.params["size_mb"], chunked=chunked)
            return
        text = render_feed(
            sim.url,
            coll,
            page,
            now_ms=sim.now_ms(),
            links=links,
            content_of=(lambda e: _break_json(e.content)) if kind == "bad_json" else None,
        )
        if kind in _HOSTILE and fault is not None:
            text = _HOSTILE[kind](text, fault.params)
        body = text.encode("utf-8")
        if kind == "truncated":
            body = body[: len(body) // 2]
        if kind == "trickle" and fault is not None:
            self._trickle(body, fault.params["interval"])
            return
        self._send(200, body, ATOM_TYPE)

    def _trickle(self, body: bytes, interval: float) -> None:
        """The whole answer, a few bytes every `interval` seconds: each read succeeds within
        any read timeout, yet the answer takes minutes (a congested proxy, a stuck pod)."""
        self._log_request_as(200)
        self.send_response(200)
        self.send_header("Content-Type", ATOM_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        for start in range(0, len(body), 8):
            if self.sim._stopping.wait(interval):
                self._reset()
                return
            self.wfile.write(body[start : start + 8])
            self.wfile.flush()

    def _links(self, raw: dict[str, str], q: _Query, *, more: bool) -> dict[str, str]:
        base = self.sim.url + urlsplit(self.path).path

        def at(page: int) -> str:
            return base + "?" + urlencode({**raw, "page": str(page)})

        links = {"self": self.sim.url + self.path, "first": at(1)}
        if more:
            links["next"] = at(q.page + 1)
        return links

    def _stream_huge(
        self,
        coll: catalog.Collection,
        page: list[SimEntry],
        size_mb: float,
        *,
        chunked: bool = False,
    ) -> None:
        """A valid feed whose one entry's content is `size_mb` MB, sent in chunks; with
        `chunked`, in HTTP chunked encoding, so no Content-Length warns the client."""
        marker = "\x00HUGE\x00"
        prefix, suffix = '{ "Context" : [ { "Blob" : "', '" } ] }'
        template = page[0] if page else self.sim.make_entry(coll.name)
        entry = replace(template, content=prefix + marker + suffix)
        head, tail = (
            render_feed(self.sim.url, coll, [entry], now_ms=self.sim.now_ms())
            .encode("utf-8")
            .split(marker.encode("utf-8"))
        )
        filler = max(0, int(size_mb * 1024 * 1024) - len(prefix) - len(suffix))
        self._log_request_as(200)
        self.send_response(200)
        self.send_header("Content-Type", ATOM_TYPE)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(head) + filler + len(tail)))
        self.end_headers()

        def write(data: bytes) -> None:
            if chunked:
                data = b"%x\r\n%s\r\n" % (len(data), data)
            self.wfile.write(data)

        write(head)
        chunk = b"A" * 65536
        left = filler
        while left > 0:
            if self.sim._stopping.is_set():
                self._reset()
                return
            n = min(left, len(chunk))
            write(chunk[:n])
            left -= n
        write(tail)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    # -- admin API ----------------------------------------------------------------------

    def _admin(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        sim = self.sim
        try:
            doc = json.loads(body.decode("utf-8")) if body.strip() else {}
            if not isinstance(doc, dict):
                raise ValueError("the body must be a JSON object")
            route = (method, path.rstrip("/"))
            if route == ("POST", "/_sim/entries"):
                self._json(201, {"ids": [e.id for e in self._admin_add(doc)]})
            elif route == ("GET", "/_sim/entries"):
                archived = query.get("archive", "").lower() == "yes"
                listed = sim.entries(query.get("feed"), archived=archived)
                self._json(200, [_entry_json(e) for e in listed])
            elif route == ("POST", "/_sim/faults"):
                kind = str(doc.pop("fault", ""))
                times = int(doc.pop("times", 1))
                feed = doc.pop("feed", None)
                sim.inject(kind, times=times, collection=_opt_str(feed), **doc)
                self._json(201, {"fault": kind, "times": times, "feed": feed})
            elif route == ("GET", "/_sim/faults"):
                self._json(200, sim.pending_faults())
            elif route == ("DELETE", "/_sim/faults"):
                self._json(200, {"cleared": sim.clear_faults()})
            elif route == ("GET", "/_sim/requests"):
                self._json(200, [asdict(r) for r in sim.requests])
            elif route == ("DELETE", "/_sim/requests"):
                sim.clear_requests()
                self._json(200, {"cleared": True})
            elif route == ("POST", "/_sim/purge"):
                before = parse_timestamp(str(doc["before"]))
                purged = sim.purge(before, archive=bool(doc.get("archive", False)))
                self._json(200, {"purged": purged})
            else:
                self._json(404, {"error": f"no admin route {method} {path}"})
        except (ValueError, TypeError, KeyError) as exc:
            self._json(400, {"error": str(exc)})

    def _admin_add(self, doc: dict[str, Any]) -> list[SimEntry]:
        sim = self.sim
        feed = str(doc.get("feed", "newhire"))
        count = int(doc.get("count", 1))
        if count < 1:
            raise ValueError("count must be at least 1")
        updated = doc.get("updated")
        published = doc.get("published")
        base = sim.now_ms() if updated is None else parse_timestamp(str(updated))
        pub = None if published is None else parse_timestamp(str(published))
        spacing = int(doc.get("spacing_ms", 0))
        made = [
            sim.make_entry(
                feed,
                updated_ms=base + i * spacing,
                published_ms=None if pub is None else pub + i * spacing,
                key=_opt_str(doc.get("key")),
                dml=str(doc.get("dml", "INSERT")),
                content=_opt_str(doc.get("content")),
            )
            for i in range(count)
        ]
        if doc.get("archived"):
            sim.add_archived(*made)
        else:
            sim.add(*made)
        return made


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _entry_json(entry: SimEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "collection": entry.collection,
        "key": entry.key,
        "updated": format_ms(entry.updated_ms),
        "published": format_ms(entry.published_ms),
        "title": entry.title,
        "seq": entry.seq,
    }
