"""OCI Notifications (ONS) simulator: a loopback HTTP server that verifies OCI request signatures.

Requests are checked the way the service checks them (Signature Version 1: draft-cavage-http-
signatures-08, rsa-sha256 over the listed headers, body digest, five minutes of clock skew), with
the public half of a registered key. A test that passes against this server therefore proves that
the request was really signed, not merely that an Authorization header was present.

Verification is a pure function (`verify_request`) so that it can be tested on its own; the
server adds topics, per-topic rate limits, scripted faults and a small unauthenticated admin API
under `/_sim/`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import hashlib
import json
import logging
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, cast
from urllib.parse import unquote
from urllib.request import parse_http_list

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from atomsync.sim.keys import ApiKey

logger = logging.getLogger("atomsync.sim.ons")

API_PREFIX = "/20181201"
MAX_CLOCK_SKEW_SECONDS = 300.0
RATE_WINDOW_SECONDS = 60.0
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MESSAGE_TYPES = frozenset({"JSON", "RAW_TEXT"})
COMPARTMENT_ID = "ocid1.compartment.oc1..aaaaaaaaatomsyncsimulatedcompartment"

_PUBLISH_PATH = re.compile(rf"^{API_PREFIX}/topics/([^/]+)/messages$")
_TOPIC_PATH = re.compile(rf"^{API_PREFIX}/topics/([^/]+)$")

# A body this large is refused unread and the connection closed: there is no reason to
# buffer hundreds of times the message limit just to compute its digest.
_HARD_BODY_LIMIT = 16 * 1024 * 1024


# --- signature verification (pure) -------------------------------------------------------------


class SignatureError(Exception):
    """A request that fails OCI signature verification; the service answers 401."""

    def __init__(self, message: str, key_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key_id = key_id


@dataclass(frozen=True)
class SignatureParams:
    key_id: str
    algorithm: str
    headers: tuple[str, ...]  # lower-cased, in signing order
    signature: bytes
    version: str | None


def parse_authorization(value: str) -> SignatureParams:
    """Parse `Authorization: Signature k="v",...`; parameters may come in any order."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "signature":
        raise SignatureError("Authorization header must use the 'Signature' scheme")
    params: dict[str, str] = {}
    for item in parse_http_list(rest):
        name, sep, raw = item.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed Authorization parameter {item.strip()!r}")
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
        params[name.strip()] = raw
    key_id = params.get("keyId", "")
    missing = [p for p in ("keyId", "signature", "headers", "algorithm") if not params.get(p)]
    if missing:
        raise SignatureError(
            f"Authorization header is missing parameter(s): {', '.join(missing)}", key_id or None
        )
    if params["algorithm"] != "rsa-sha256":
        raise SignatureError(
            f"unsupported signature algorithm {params['algorithm']!r}; expected 'rsa-sha256'",
            key_id,
        )
    version = params.get("version")
    if version is not None and version != "1":
        raise SignatureError(f"unsupported signature version {version!r}; expected '1'", key_id)
    try:
        signature = base64.b64decode(params["signature"], validate=True)
    except binascii.Error:
        raise SignatureError("signature is not valid base64", key_id) from None
    return SignatureParams(
        key_id=key_id,
        algorithm=params["algorithm"],
        headers=tuple(h.lower() for h in params["headers"].split()),
        signature=signature,
        version=version,
    )


def required_signed_headers(method: str) -> tuple[str, ...]:
    """What must be signed besides `date` or `x-date` (one of them is always required too)."""
    base = ("(request-target)", "host")
    if method.upper() in BODY_METHODS:
        return (*base, "content-length", "content-type", "x-content-sha256")
    return base


def check_signed_headers(method: str, signed: Sequence[str]) -> None:
    names = {h.lower() for h in signed}
    missing = [h for h in required_signed_headers(method) if h not in names]
    if "date" not in names and "x-date" not in names:
        missing.insert(0, "date")
    if missing:
        raise SignatureError(
            f"required header(s) not signed for {method.upper()}: {', '.join(missing)}"
        )


def build_signing_string(
    method: str, target: str, signed: Sequence[str], headers: Mapping[str, str]
) -> str:
    """The text that was signed: one `name: value` line per signed header, in signed order.

    `target` is the request target exactly as received (path and query, still percent-encoded);
    header names are matched case-insensitively.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    lines = []
    for raw_name in signed:
        name = raw_name.lower()
        if name == "(request-target)":
            value = f"{method.lower()} {target}"
        else:
            found = lowered.get(name)
            if found is None:
                raise SignatureError(f"signed header '{name}' is not present in the request")
            value = found
        lines.append(f"{name}: {value}")
    return "\n".join(lines)


def content_sha256(body: bytes) -> str:
    """The `x-content-sha256` value for a body: padded base64 of its SHA-256."""
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def check_clock_skew(date_value: str, now: float, max_skew: float = MAX_CLOCK_SKEW_SECONDS) -> None:
    try:
        signed_at = email.utils.parsedate_to_datetime(date_value)
    except (TypeError, ValueError):  # 3.9 raises TypeError for garbage, later versions ValueError
        raise SignatureError(f"Date '{date_value}' could not be parsed") from None
    if signed_at.tzinfo is None:  # "-0000" means UTC with no offset information
        signed_at = signed_at.replace(tzinfo=timezone.utc)
    if abs(now - signed_at.timestamp()) > max_skew:
        raise SignatureError(
            f"Date '{date_value}' is not within allowed clock skew. Current '{_http_date(now)}', "
            f"valid datetime range: ['{_http_date(now - max_skew)}', "
            f"'{_http_date(now + max_skew)}']"
        )


def verify_request(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    keys: Mapping[str, rsa.RSAPublicKey],
    now: float,
) -> str:
    """Verify an OCI-signed request; return its keyId or raise SignatureError.

    `headers` maps received header names (any case) to values; `keys` maps keyIds, either
    `tenancy/user/fingerprint` or `ST$<token>`, to public keys.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    authorization = lowered.get("authorization")
    if not authorization:
        raise SignatureError("Authorization header is missing")
    params = parse_authorization(authorization)
    key_id = params.key_id
    try:
        check_signed_headers(method, params.headers)
        public_key = keys.get(key_id)
        if public_key is None:
            raise SignatureError(f"unknown keyId '{_shorten(key_id)}'")
        signing_string = build_signing_string(method, target, params.headers, lowered)
        try:
            data = signing_string.encode("ascii")
        except UnicodeEncodeError:
            raise SignatureError("signed header values are not ASCII") from None
        try:
            public_key.verify(params.signature, data, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SignatureError(
                f"signature does not verify for keyId '{_shorten(key_id)}' over headers "
                f"'{' '.join(params.headers)}'"
            ) from None
        if method.upper() in BODY_METHODS:
            _check_body(lowered, body)
        date_name = "x-date" if "x-date" in params.headers else "date"
        check_clock_skew(lowered[date_name], now)
    except SignatureError as error:
        raise SignatureError(error.message, key_id) from None
    return key_id


def _check_body(headers: Mapping[str, str], body: bytes) -> None:
    declared = headers["content-length"].strip()
    if not declared.isdigit() or int(declared) != len(body):
        raise SignatureError(
            f"content-length '{declared}' does not match the {len(body)} body bytes received"
        )
    if headers["x-content-sha256"] != content_sha256(body):
        raise SignatureError("x-content-sha256 does not match the SHA-256 of the body")


def _http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def _rfc3339(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _shorten(key_id: str) -> str:
    # Session-token keyIds carry a whole JWT; the start is enough to tell them apart in logs.
    return key_id if len(key_id) <= 120 else key_id[:117] + "..."


# --- recorded requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    topic_id: str
    title: str | None
    body: str
    key_id: str
    message_id: str
    request_id: str
    received_at: float
    headers: dict[str, str]  # lower-cased names
    raw: bytes


@dataclass(frozen=True)
class Rejected:
    status: int  # 0 when the connection was cut instead of answered
    code: str
    message: str
    method: str
    path: str
    key_id: str | None
    received_at: float


# --- faults --------------------------------------------------------------------------------------

# fault name -> (status, code) of the error answer; "slow" and "reset" are not answers.
_ERROR_FAULTS: dict[str, tuple[int, str]] = {
    "400": (400, "InvalidParameter"),
    "401": (401, "NotAuthenticated"),
    "404": (404, "NotAuthorizedOrNotFound"),
    "429": (429, "TooManyRequests"),
    "500": (500, "InternalServerError"),
    "502": (502, "BadGateway"),
    "503": (503, "ServiceUnavailable"),
}
_FAULT_PARAMS: dict[str, frozenset[str]] = {
    **{name: frozenset() for name in _ERROR_FAULTS},
    "429": frozenset({"retry_after"}),
    "slow": frozenset({"delay"}),
    "reset": frozenset(),
}
FAULTS = frozenset(_FAULT_PARAMS)


@dataclass
class _Fault:
    kind: str
    remaining: int
    topic_id: str | None
    params: dict[str, object] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        return {
            "fault": self.kind,
            "times": self.remaining,
            "topic_id": self.topic_id,
            **self.params,
        }


def _validate_fault(kind: str, times: int, params: Mapping[str, object]) -> dict[str, object]:
    if kind not in _FAULT_PARAMS:
        raise ValueError(f"unknown fault {kind!r}; known: {', '.join(sorted(FAULTS))}")
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError(f"times must be a positive integer, not {times!r}")
    unknown = set(params) - _FAULT_PARAMS[kind]
    if unknown:
        raise ValueError(f"fault {kind!r} takes no parameter(s) {', '.join(sorted(unknown))}")
    clean: dict[str, object] = {}
    if kind == "slow":
        delay = params.get("delay")
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError("fault 'slow' needs delay=<non-negative seconds>")
        clean["delay"] = float(delay)
    if "retry_after" in params:
        retry_after = params["retry_after"]
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise ValueError("retry_after must be a non-negative whole number of seconds")
        clean["retry_after"] = retry_after
    return clean


# --- the server ----------------------------------------------------------------------------------


class _Reject(Exception):
    """An error answer; raised anywhere in request handling and sent by the handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
        key_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.key_id = key_id
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.close = close


class _AbortConnection(Exception):
    """Drop the connection without an answer (a reset fault, or stop() during a slow reply)."""

    def __init__(self, *, reset: bool) -> None:
        super().__init__("connection aborted")
        self.reset = reset


@dataclass
class _Topic:
    topic_id: str
    name: str
    rate_per_minute: int | None
    allowed_key_ids: frozenset[str] | None
    time_created: float
    etag: str


@dataclass(frozen=True)
class _Route:
    action: str  # "publish" or "get_topic"
    topic_id: str


class OnsSimulator:
    """Serves PublishMessage and GetTopic on loopback, for real SDK clients.

    `url` is what a client passes as `service_endpoint` (the SDK appends `/20181201`). The
    simulator can be stopped and started again; it keeps its port, keys, topics and records.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        rate_per_minute: int = 60,
        max_message_bytes: int = 65536,
    ) -> None:
        self._host = host
        self._port = port
        self.clock = clock
        self._rate_per_minute = rate_per_minute
        self.max_message_bytes = max_message_bytes
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._topics: dict[str, _Topic] = {}
        self._accepted: list[Accepted] = []
        self._rejected: list[Rejected] = []
        self._windows: dict[str, deque[float]] = {}
        self._faults: list[_Fault] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.url = ""

    # lifecycle

    def start(self) -> OnsSimulator:
        if self._server is not None:
            raise RuntimeError("the ONS simulator is already running")
        self._stopping.clear()
        server = _Server((self._host, self._port), _Handler)
        server.simulator = self
        host, port = server.server_address[:2]
        self._port = port  # a restart after stop() keeps the URL clients were given
        self.url = f"http://{host!s}:{port}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ons-sim:{port}",
            daemon=True,
        )
        self._thread.start()
        logger.debug("ONS simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # cuts short any slow reply in progress
        server.shutdown()
        server.server_close()
        # Keep-alive connections would otherwise keep being served by their handler threads.
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> OnsSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # fixtures

    def add_key(self, key_id: str, public_pem: bytes) -> None:
        public_key = serialization.load_pem_public_key(public_pem)
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise ValueError("OCI signing keys are RSA keys")
        with self._lock:
            self._keys[key_id] = public_key

    def add_api_key(self, key: ApiKey) -> None:
        self.add_key(key.key_id, key.public_pem)

    def add_topic(
        self,
        topic_id: str,
        *,
        name: str | None = None,
        rate_per_minute: int | None = None,
        allowed_key_ids: set[str] | None = None,
    ) -> None:
        """Register a topic; `allowed_key_ids=None` lets every registered key publish."""
        topic = _Topic(
            topic_id=topic_id,
            name=name or topic_id.rsplit(".", 1)[-1],
            rate_per_minute=rate_per_minute,
            allowed_key_ids=None if allowed_key_ids is None else frozenset(allowed_key_ids),
            time_created=self.clock(),
            etag=uuid.uuid4().hex,
        )
        with self._lock:
            self._topics[topic_id] = topic

    # observations

    @property
    def accepted(self) -> list[Accepted]:
        with self._lock:
            return list(self._accepted)

    @property
    def rejected(self) -> list[Rejected]:
        with self._lock:
            return list(self._rejected)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Accepted]:
        """Block until at least `count` messages were accepted; return all of them."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._accepted) >= count, timeout):
                recent = "; ".join(
                    f"{r.status} {r.code} {r.method} {r.path}: {r.message}"
                    for r in self._rejected[-3:]
                )
                raise TimeoutError(
                    f"expected {count} accepted message(s) within {timeout:g} s, "
                    f"got {len(self._accepted)}; {len(self._rejected)} rejected"
                    + (f" (latest: {recent})" if recent else "")
                )
            return list(self._accepted)

    def reset(self) -> None:
        """Forget accepted and rejected requests and the rate windows (not keys, topics, faults)."""
        with self._lock:
            self._accepted.clear()
            self._rejected.clear()
            self._windows.clear()

    # faults

    def inject(
        self, fault: str, *, times: int = 1, topic_id: str | None = None, **params: object
    ) -> None:
        """Queue a fault for the next `times` publish requests (to `topic_id` only, if given).

        Faults apply in FIFO order, after the signature was verified: "500", "502", "503",
        "400", "401", "404", "429" (retry_after=seconds adds Retry-After), "slow" (delay=seconds,
        then answer and accept), "reset" (read the request, then reset the connection).
        """
        clean = _validate_fault(fault, times, params)
        with self._lock:
            self._faults.append(_Fault(fault, times, topic_id, clean))

    def clear_faults(self) -> int:
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
            return count

    def pending_faults(self) -> list[dict[str, object]]:
        with self._lock:
            return [fault.describe() for fault in self._faults]

    # request handling (called from handler threads)

    def _authenticate(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes, now: float
    ) -> str:
        with self._lock:
            keys = dict(self._keys)
        try:
            return verify_request(method, target, headers, body, keys=keys, now=now)
        except SignatureError as error:
            raise _Reject(401, "NotAuthenticated", error.message, key_id=error.key_id) from error

    def _take_fault(self, topic_id: str) -> _Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.topic_id is None or fault.topic_id == topic_id:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        del self._faults[index]
                    return _Fault(fault.kind, 1, fault.topic_id, dict(fault.params))
        return None

    def _topic_for(self, topic_id: str, key_id: str) -> _Topic:
        with self._lock:
            topic = self._topics.get(topic_id)
        if topic is None or (
            topic.allowed_key_ids is not None and key_id not in topic.allowed_key_ids
        ):
            # Deliberately ambiguous, as in OCI: a wrong OCID and a missing policy look alike.
            raise _Reject(
                404,
                "NotAuthorizedOrNotFound",
                f"Authorization failed or requested resource not found: topic '{topic_id}'",
            )
        return topic

    def _get_topic(self, topic: _Topic) -> dict[str, object]:
        return {
            "topicId": topic.topic_id,
            "name": topic.name,
            "shortTopicId": hashlib.sha256(topic.topic_id.encode()).hexdigest()[:10],
            "compartmentId": COMPARTMENT_ID,
            "lifecycleState": "ACTIVE",
            "description": "",
            "timeCreated": _rfc3339(topic.time_created),
            "etag": topic.etag,
            "apiEndpoint": self.url,
            "freeformTags": {},
            "definedTags": {},
        }

    def _publish(
        self,
        topic: _Topic,
        key_id: str,
        request_id: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Accepted:
        message_type = headers.get("messagetype")
        if message_type is not None and message_type not in MESSAGE_TYPES:
            raise _Reject(
                400,
                "InvalidParameter",
                f"messageType must be JSON or RAW_TEXT, not {message_type!r}",
            )
        if len(body) > self.max_message_bytes:
            raise _Reject(
                400,
                "InvalidParameter",
                f"message of {len(body)} bytes exceeds the maximum of "
                f"{self.max_message_bytes} bytes",
            )
        title, text = _parse_message(body)
        with self._changed:
            now = self.clock()
            window = self._windows.setdefault(topic.topic_id, deque())
            while window and window[0] <= now - RATE_WINDOW_SECONDS:
                window.popleft()
            limit = (
                self._rate_per_minute if topic.rate_per_minute is None else topic.rate_per_minute
            )
            if len(window) >= limit:
                raise _Reject(
                    429,
                    "TooManyRequests",
                    f"topic '{topic.topic_id}' already accepted {limit} messages in the last "
                    f"{RATE_WINDOW_SECONDS:g} s",
                )
            window.append(now)
            accepted = Accepted(
                topic_id=topic.topic_id,
                title=title,
                body=text,
                key_id=key_id,
                message_id=str(uuid.uuid4()),
                request_id=request_id,
                received_at=now,
                headers=dict(headers),
                raw=body,
            )
            self._accepted.append(accepted)
            self._changed.notify_all()
        return accepted

    def _record_rejection(
        self, method: str, path: str, key_id: str | None, *, status: int, code: str, message: str
    ) -> None:
        rejection = Rejected(status, code, message, method, path, key_id, self.clock())
        logger.debug("rejected %s %s: %s %s %s", method, path, status, code, message)
        with self._changed:
            self._rejected.append(rejection)
            self._changed.notify_all()

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


def _parse_message(body: bytes) -> tuple[str | None, str]:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _Reject(400, "CannotParseRequest", "request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise _Reject(400, "CannotParseRequest", "request body must be a JSON object")
    text = document.get("body")
    if not isinstance(text, str):
        raise _Reject(400, "InvalidParameter", "'body' is required and must be a string")
    title = document.get("title")
    if title is not None and not isinstance(title, str):
        raise _Reject(400, "InvalidParameter", "'title' must be a string")
    return title, text


def _route(method: str, target: str) -> _Route:
    path = target.split("?", 1)[0]
    for pattern, action, allowed in (
        (_PUBLISH_PATH, "publish", "POST"),
        (_TOPIC_PATH, "get_topic", "GET"),
    ):
        match = pattern.match(path)
        if match is None:
            continue
        if method != allowed:
            raise _Reject(
                405,
                "MethodNotAllowed",
                f"{method} is not allowed on {path}",
                headers={"Allow": allowed},
            )
        return _Route(action, unquote(match.group(1)))
    raise _Reject(404, "NotFound", f"no such resource: {path}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    simulator: OnsSimulator

    def handle_error(self, request: object, client_address: object) -> None:
        # Hang-ups are dealt with in the handler; what arrives here is a bug in the simulator,
        # and must be seen even when the test has not configured logging.
        logger.exception("ONS simulator failed serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the SDK keeps connections alive
    timeout = 60.0  # idle keep-alive connections are dropped eventually
    server: _Server

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header comes from the simulated clock, as a skewed service's would.
        return _http_date(self.server.simulator.clock() if timestamp is None else timestamp)

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; with Nagle on, the body waits for the
        # client's delayed ACK (40 ms per request on Linux loopback).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.simulator._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.simulator._track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        try:
            super().handle()
        except _AbortConnection as abort:
            self.close_connection = True
            if abort.reset:
                # SO_LINGER 0 makes close() send RST, not FIN: the client sees a reset.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            self.rfile.close()
            self.wfile.close()
            self.connection.close()
        except OSError as error:  # the client went away mid-answer
            logger.debug("connection error: %s", error)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # plumbing

    def _dispatch(self) -> None:
        sim = self.server.simulator
        headers = _first_values(self.headers.items())
        request_id = headers.get("opc-request-id") or uuid.uuid4().hex.upper()
        key_id: str | None = None
        try:
            body = self._read_body(headers)
            if self.path.split("?", 1)[0].startswith("/_sim/"):
                self._admin(body)
                return
            route = _route(self.command, self.path)
            key_id = sim._authenticate(self.command, self.path, headers, body, sim.clock())
            if route.action == "get_topic":
                topic = sim._topic_for(route.topic_id, key_id)
                self._send_json(200, sim._get_topic(topic), request_id, {"etag": topic.etag})
                return
            self._apply_fault(sim._take_fault(route.topic_id), key_id)
            topic = sim._topic_for(route.topic_id, key_id)
            accepted = sim._publish(topic, key_id, request_id, headers, body)
        except _Reject as reject:
            sim._record_rejection(
                self.command,
                self.path,
                reject.key_id or key_id,
                status=reject.status,
                code=reject.code,
                message=reject.message,
            )
            if reject.close:
                self.close_connection = True
            self._send_json(
                reject.status,
                {"code": reject.code, "message": reject.message},
                request_id,
                reject.headers,
            )
            return
        except _AbortConnection as abort:
            code = "ConnectionReset" if abort.reset else "ConnectionAborted"
            sim._record_rejection(
                self.command, self.path, key_id, status=0, code=code, message="no answer sent"
            )
            raise
        self._send_json(
            200,
            {"messageId": accepted.message_id, "timeStamp": _rfc3339(accepted.received_at)},
            request_id,
        )

    def _apply_fault(self, fault: _Fault | None, key_id: str) -> None:
        if fault is None:
            return
        logger.debug("applying fault %s to a request from %s", fault.kind, _shorten(key_id))
        if fault.kind == "reset":
            raise _AbortConnection(reset=True)
        if fault.kind == "slow":
            if self.server.simulator._stopping.wait(cast(float, fault.params["delay"])):
                raise _AbortConnection(reset=False)
            return
        status, code = _ERROR_FAULTS[fault.kind]
        headers = {}
        if "retry_after" in fault.params:
            headers["Retry-After"] = str(fault.params["retry_after"])
        raise _Reject(status, code, f"injected fault {fault.kind}", headers=headers)

    def _read_body(self, headers: Mapping[str, str]) -> bytes:
        if "transfer-encoding" in headers:
            # OCI clients always send Content-Length; without it the body cannot be delimited.
            raise _Reject(
                411, "LengthRequired", "chunked request bodies are not supported", close=True
            )
        declared = headers.get("content-length")
        if declared is None:
            return b""
        if not declared.strip().isdigit():
            raise _Reject(400, "InvalidParameter", "invalid Content-Length", close=True)
        length = int(declared)
        if length > _HARD_BODY_LIMIT:
            raise _Reject(
                400,
                "InvalidParameter",
                f"request body of {length} bytes is far over the message size limit",
                close=True,
            )
        body = self.rfile.read(length)
        if len(body) < length:
            # The client died mid-request (a killed publisher): a real service sees only a
            # dropped connection, so nothing is answered and nothing is judged.
            raise _AbortConnection(reset=False)
        return body

    def _admin(self, body: bytes) -> None:
        sim = self.server.simulator
        path = self.path.split("?", 1)[0]
        request_id = uuid.uuid4().hex.upper()
        routes: dict[tuple[str, str], Callable[[], object]] = {
            ("GET", "/_sim/messages"): lambda: [_summary(a) for a in sim.accepted],
            ("GET", "/_sim/rejections"): lambda: [asdict(r) for r in sim.rejected],
            ("GET", "/_sim/faults"): sim.pending_faults,
            ("POST", "/_sim/faults"): lambda: _admin_inject(sim, body),
            ("DELETE", "/_sim/faults"): lambda: {"cleared": sim.clear_faults()},
        }
        action = routes.get((self.command, path))
        if action is None:
            known = {route_path for _, route_path in routes}
            status, code = (405, "MethodNotAllowed") if path in known else (404, "NotFound")
            self._send_json(status, {"code": code, "message": f"{self.command} {path}"}, request_id)
            return
        try:
            result = action()
        except ValueError as error:
            payload = {"code": "InvalidParameter", "message": str(error)}
            self._send_json(400, payload, request_id)
            return
        self._send_json(200, result, request_id)

    def _send_json(
        self,
        status: int,
        payload: object,
        request_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("opc-request-id", request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


def _first_values(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    # Lower-cased names; a repeated header keeps its first value, as a single lookup would.
    headers: dict[str, str] = {}
    for name, value in items:
        headers.setdefault(name.lower(), value)
    return headers


def _summary(accepted: Accepted) -> dict[str, object]:
    return {
        "topic_id": accepted.topic_id,
        "title": accepted.title,
        "body": accepted.body,
        "key_id": accepted.key_id,
        "message_id": accepted.message_id,
        "request_id": accepted.request_id,
        "received_at": accepted.received_at,
    }


def _admin_inject(sim: OnsSimulator, body: bytes) -> dict[str, object]:
    try:
        spec = json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, ValueError):
        raise ValueError("fault specification is not valid JSON") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("fault"), str):
        raise ValueError('expected {"fault": "<name>", "times": N, "topic_id": ..., ...}')
    fault = spec.pop("fault")
    times = spec.pop("times", 1)
    topic_id = spec.pop("topic_id", None)
    if topic_id is not None and not isinstance(topic_id, str):
        raise ValueError("topic_id must be a string or null")
    sim.inject(fault, times=times, topic_id=topic_id, **spec)
    return {"fault": fault, "times": times, "topic_id": topic_id, **spec}


__all__ = [
    "FAULTS",
    "Accepted",
    "OnsSimulator",
    "Rejected",
    "SignatureError",
    "SignatureParams",
    "build_signing_string",
    "check_clock_skew",
    "check_signed_headers",
    "content_sha256",
    "parse_authorization",
    "required_signed_headers",
    "verify_request",
]
