"""The sinks and their wrappers.

The OCI Notifications sink is driven against the ONS simulator, which verifies the real SDK
signature on every request; the webhook sink against a loopback receiver started here; the
wrappers with fake sleeps and scripted inner sinks (no waiting).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

import pytest
from cryptography.hazmat.primitives import serialization

from atomsync import config as configuration
from atomsync.atom import Entry
from atomsync.config import PublisherConfig
from atomsync.errors import EXIT_CONFIG, ConfigError
from atomsync.httputil import parse_retry_after
from atomsync.message import Message, build, request_size
from atomsync.pacing import SAFETY
from atomsync.publish import (
    Interrupted,
    PacedSink,
    RetryingSink,
    SinkError,
    build_sink,
    wrap,
)
from atomsync.publish.ons import OnsSink, classify
from atomsync.publish.stdout import StdoutSink
from atomsync.publish.webhook import WebhookSink, signature
from atomsync.sim.keys import KEY_FILE_NAME, ApiKey, generate_api_key, write_oci_config
from atomsync.sim.ons import OnsSimulator

TOPIC = "ocid1.onstopic.oc1.iad.aaaaaaaasinktopicone"
OTHER_TOPIC = "ocid1.onstopic.oc1.iad.aaaaaaaasinktopictwo"
UNKNOWN_TOPIC = "ocid1.onstopic.oc1.iad.aaaaaaaanosuchtopic"
SECRET = "hmac-secret-5e1f0c"
TOKEN = "bearer-token-9a7b3d"
T0 = 1_709_543_722_000


def message(
    entry_id: str = "atomservlet:newhire:EMP300100555000111",
    *,
    topic_id: Optional[str] = None,
    name: str = "Zoë Åström",
    updated_ms: int = T0,
) -> Message:
    entry = Entry(
        id=entry_id,
        updated_ms=updated_ms,
        published_ms=updated_ms,
        title=f"{name} Hired",
        summary="Employee Period of Service Created",
        author="HR.SPECIALIST",
        links={"edit": "https://pod/e", "related": "https://pod/r"},
        context=[{"PersonNumber": "10457", "PersonName": name, "Note": 'say "hi"\nthen go'}],
    )
    return build(
        entry,
        feed="newhire",
        workspace="employee",
        cursor="updated",
        title_template="New hire: {PersonName} ({PersonNumber})",
        topic_id=topic_id,
    )


# --- OCI Notifications: fixtures ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every server here is on loopback; a proxy from the environment must not get in between.
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def oci() -> ModuleType:
    # Imported here, not at module level: `import oci` costs 0.4 s and 50 MB.
    import oci as sdk

    return sdk


@pytest.fixture(scope="module")
def api_key() -> ApiKey:
    return generate_api_key()


@pytest.fixture
def oci_config(api_key: ApiKey, tmp_path: Path) -> Path:
    return write_oci_config(tmp_path / "oci", api_key)


def start_sim(api_key: ApiKey, clock: Callable[[], float] = time.time) -> OnsSimulator:
    sim = OnsSimulator(clock=clock)
    sim.add_api_key(api_key)
    sim.add_topic(TOPIC, name="hcm-events")
    sim.add_topic(OTHER_TOPIC, name="hcm-other")
    return sim.start()


@pytest.fixture
def sim(api_key: ApiKey) -> Iterator[OnsSimulator]:
    simulator = start_sim(api_key)
    try:
        yield simulator
    finally:
        simulator.stop()


def ons_config(sim: OnsSimulator, oci_config: Path, **overrides: Any) -> PublisherConfig:
    values: dict[str, Any] = {
        "topic_id": TOPIC,
        "endpoint": sim.url,
        "oci_config_file": str(oci_config),
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return PublisherConfig(**values)


@pytest.fixture
def make_sink(
    sim: OnsSimulator, oci_config: Path, oci: ModuleType
) -> Iterator[Callable[..., OnsSink]]:
    sinks: list[OnsSink] = []

    def make(**overrides: Any) -> OnsSink:
        sink = OnsSink(ons_config(sim, oci_config, **overrides))
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


@pytest.fixture
def sink(make_sink: Callable[..., OnsSink]) -> OnsSink:
    return make_sink()


def publish_error(sink: Any, msg: Optional[Message] = None) -> SinkError:
    with pytest.raises(SinkError) as caught:
        sink.publish(msg or message())
    return caught.value


# --- OCI Notifications: publishing --------------------------------------------------------------


def test_publish_sends_the_exact_title_and_body_signed_with_the_api_key(
    sink: OnsSink, sim: OnsSimulator, api_key: ApiKey
) -> None:
    msg = message()
    receipt = sink.publish(msg)
    [accepted] = sim.accepted
    assert receipt == accepted.message_id
    assert accepted.topic_id == TOPIC
    assert accepted.title == "New hire: Zoë Åström (10457)" == msg.title
    assert accepted.body == msg.body_text()
    assert json.loads(accepted.body)["id"] == msg.entry_id
    assert accepted.key_id == api_key.key_id  # the simulator verified this key's signature
    # What message.fit measures is what really went over the wire.
    assert len(accepted.raw) == request_size(msg.title, msg.body_text())
    # Deprecated, and publishes failed with it: never sent.
    assert "messagetype" not in accepted.headers
    assert sim.rejected == []


def test_endpoint_override_is_used(sink: OnsSink, sim: OnsSimulator, oci_config: Path) -> None:
    assert sink.client().base_client.endpoint == f"{sim.url}/20181201"
    regional = OnsSink(PublisherConfig(topic_id=TOPIC, oci_config_file=str(oci_config)))
    try:
        # From the profile's region when there is no override (no request is made here).
        assert (
            regional.client().base_client.endpoint
            == "https://notification.us-ashburn-1.oraclecloud.com/20181201"
        )
    finally:
        regional.close()


def test_per_message_topic_overrides_the_default(sink: OnsSink, sim: OnsSimulator) -> None:
    sink.publish(message("a", topic_id=OTHER_TOPIC))
    sink.publish(message("b"))
    assert [(a.topic_id, json.loads(a.body)["id"]) for a in sim.accepted] == [
        (OTHER_TOPIC, "a"),
        (TOPIC, "b"),
    ]


def test_prepare_builds_the_client_without_a_request(sink: OnsSink, sim: OnsSimulator) -> None:
    sink.prepare()
    assert sink._client is not None
    assert sim.accepted == [] and sim.rejected == []


def test_no_topic_anywhere_is_a_setup_problem(oci: ModuleType) -> None:
    err = publish_error(OnsSink(PublisherConfig(topic_id=None)))
    assert err.config_level and not err.retryable
    assert "publisher.topic_id" in str(err) and "newhire" in str(err)


def test_client_is_rebuilt_after_close(sink: OnsSink, sim: OnsSimulator) -> None:
    sink.publish(message("a"))
    sink.close()
    assert sink._client is None
    sink.publish(message("b"))
    assert len(sim.accepted) == 2


# --- OCI Notifications: configuration errors are exit-78 material --------------------------------


def prepare_error(cfg: PublisherConfig) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        OnsSink(cfg).prepare()
    assert caught.value.exit_code == EXIT_CONFIG
    return caught.value


def test_missing_oci_config_file(oci: ModuleType, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "config"
    err = prepare_error(PublisherConfig(topic_id=TOPIC, oci_config_file=str(missing)))
    assert err.key == "publisher.oci_config_file"
    assert str(missing) in err.message and "not found" in err.message


def test_missing_profile(oci: ModuleType, oci_config: Path) -> None:
    cfg = PublisherConfig(topic_id=TOPIC, oci_config_file=str(oci_config), oci_profile="ATOMSYNC")
    err = prepare_error(cfg)
    assert err.key == "publisher.oci_profile"
    assert "[ATOMSYNC]" in err.message and str(oci_config) in err.message


@pytest.mark.parametrize(
    ("key_bytes", "expected"),
    [
        (b"this is not a key\n", "is not a usable private key"),
        ("public", "is not a usable private key"),
        ("encrypted", "is encrypted: add pass_phrase"),
        (None, "does not exist"),
    ],
    ids=["garbage", "public-key", "encrypted", "missing"],
)
def test_bad_key_file(
    oci: ModuleType, oci_config: Path, api_key: ApiKey, key_bytes: Any, expected: str
) -> None:
    key_path = oci_config.parent / KEY_FILE_NAME
    if key_bytes is None:
        key_path.unlink()
    elif key_bytes == "public":
        key_path.write_bytes(api_key.public_pem)
    elif key_bytes == "encrypted":
        key_path.write_bytes(
            api_key.load_private_key().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"passphrase"),
            )
        )
    else:
        key_path.write_bytes(key_bytes)
    err = prepare_error(PublisherConfig(topic_id=TOPIC, oci_config_file=str(oci_config)))
    assert err.key == "publisher.oci_config_file"
    assert expected in err.message
    assert str(key_path.resolve()) in err.message


def test_invalid_profile_values_are_named(oci: ModuleType, oci_config: Path) -> None:
    text = oci_config.read_text()
    oci_config.write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("region="))
        .replace("fingerprint=", "fingerprint=zz")
        .rstrip()
        + "\n"
    )
    err = prepare_error(PublisherConfig(topic_id=TOPIC, oci_config_file=str(oci_config)))
    assert err.key == "publisher.oci_config_file"
    assert "fingerprint is malformed" in err.message and "region is missing" in err.message


def test_config_file_that_is_not_ini(oci: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("user: not an ini file\n")
    err = prepare_error(PublisherConfig(topic_id=TOPIC, oci_config_file=str(path)))
    assert err.key == "publisher.oci_config_file"
    assert "is not an OCI config file" in err.message


# --- OCI Notifications: classification of failures ----------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code", "retryable", "config_level", "kind"),
    [
        ("400", "InvalidParameter", False, False, "rejected"),
        ("401", "NotAuthenticated", True, True, "auth"),
        ("404", "NotAuthorizedOrNotFound", True, True, "not_found"),
        ("429", "TooManyRequests", True, False, "throttled"),
        ("500", "InternalServerError", True, False, "server"),
        ("502", "BadGateway", True, False, "server"),
        ("503", "ServiceUnavailable", True, False, "server"),
    ],
)
def test_injected_error_answers_are_classified(
    sink: OnsSink,
    sim: OnsSimulator,
    fault: str,
    code: str,
    retryable: bool,
    config_level: bool,
    kind: str,
) -> None:
    sim.inject(fault)
    err = publish_error(sink)
    assert (err.retryable, err.config_level, err.kind) == (retryable, config_level, kind)
    assert f"answered {fault} {code}" in str(err)
    assert "opc-request-id " in str(err)  # what Oracle support asks for
    assert err.retry_after is None
    assert sim.accepted == []
    sink.publish(message())  # the fault was used up; the same sink works again
    assert len(sim.accepted) == 1


def test_401_hint_names_the_identity_settings(sink: OnsSink, sim: OnsSimulator) -> None:
    sim.inject("401")
    text = str(publish_error(sink))
    for word in ("user", "tenancy", "fingerprint", "key_file", "clock"):
        assert word in text


def test_401_from_an_unregistered_key(sim: OnsSimulator, oci: ModuleType, tmp_path: Path) -> None:
    stranger = generate_api_key(user="ocid1.user.oc1..aaaaaaaaanotregistered")
    sink = OnsSink(ons_config(sim, write_oci_config(tmp_path / "stranger", stranger)))
    try:
        err = publish_error(sink)
    finally:
        sink.close()
    assert (err.kind, err.retryable, err.config_level) == ("auth", True, True)
    assert "401 NotAuthenticated" in str(err) and "fingerprint" in str(err)
    assert [r.status for r in sim.rejected] == [401]


def test_401_from_clock_skew_says_so(api_key: ApiKey, oci_config: Path, oci: ModuleType) -> None:
    # The service's clock is ten minutes ahead of ours: our signed Date is out of its window.
    skewed = start_sim(api_key, clock=lambda: time.time() + 600)
    sink = OnsSink(ons_config(skewed, oci_config))
    try:
        err = publish_error(sink)
    finally:
        sink.close()
        skewed.stop()
    assert (err.kind, err.config_level) == ("auth", True)
    text = str(err)
    assert "not within allowed clock skew" in text  # the service's words, verbatim
    assert "clock is off by more than 5 minutes" in text
    assert "fingerprint" not in text  # the hint points at the actual cause


def test_unknown_topic_names_the_topic_and_the_policy(sink: OnsSink, sim: OnsSimulator) -> None:
    err = publish_error(sink, message(topic_id=UNKNOWN_TOPIC))
    assert (err.kind, err.config_level) == ("not_found", True)
    text = str(err)
    assert "404 NotAuthorizedOrNotFound" in text
    assert f"topic OCID {UNKNOWN_TOPIC}" in text
    assert "use ons-topics" in text and "policy" in text
    assert sim.url in text  # the endpoint override is part of the ambiguity


def test_oversized_request_is_rejected_for_good(sink: OnsSink, sim: OnsSimulator) -> None:
    big = Message("newhire", "big", "big@1", "Big", {"id": "big", "pad": "x" * 70_000})
    err = publish_error(sink, big)
    assert (err.retryable, err.config_level, err.kind) == (False, False, "rejected")
    assert "400 InvalidParameter" in str(err) and "exceeds" in str(err)
    assert sim.accepted == []


def test_retry_after_is_read_from_the_service_error_headers(
    sink: OnsSink, sim: OnsSimulator, oci: ModuleType
) -> None:
    # What the SDK really hands over: a case-insensitive dict of the response headers.
    sim.inject("429", retry_after=7)
    with pytest.raises(oci.exceptions.ServiceError) as caught:
        sink.client().publish_message(TOPIC, oci.ons.models.MessageDetails(body="x"))
    headers = caught.value.headers
    assert headers["Retry-After"] == headers["retry-after"] == "7"

    sim.inject("429", retry_after=7)
    err = publish_error(sink)
    assert (err.kind, err.retryable, err.config_level) == ("throttled", True, False)
    assert err.retry_after == 7.0


def test_real_rate_limit_429_is_retryable(
    sim: OnsSimulator, make_sink: Callable[..., OnsSink]
) -> None:
    sim.add_topic("ocid1.onstopic.oc1.iad.aaaaaaaaslowtopic", rate_per_minute=1)
    sink = make_sink(topic_id="ocid1.onstopic.oc1.iad.aaaaaaaaslowtopic")
    sink.publish(message("first"))
    err = publish_error(sink, message("second"))
    assert (err.kind, err.retryable, err.config_level) == ("throttled", True, False)
    assert err.retry_after is None  # the simulator, like the service, need not send one
    assert len(sim.accepted) == 1


@dataclass
class FakeServiceError:
    status: int
    code: str
    message: str = "nope"
    request_id: Optional[str] = None
    headers: Any = None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),  # a plain dict, capitalised
        ({"retry-after": "2.5"}, 2.5),
        ({"Retry-After": "-4"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "inf"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_classify_retry_after_forms(headers: Any, expected: Optional[float]) -> None:
    err = classify(FakeServiceError(503, "ServiceUnavailable", headers=headers), TOPIC, None)
    assert err.retryable and err.kind == "server"
    assert err.retry_after == expected


def test_classify_remaining_statuses() -> None:
    def of(status: int, code: str) -> tuple[bool, bool, str]:
        err = classify(FakeServiceError(status, code), TOPIC, None)
        return err.retryable, err.config_level, err.kind

    assert of(409, "IncorrectState") == (True, False, "server")
    assert of(409, "Conflict") == (False, False, "rejected")
    assert of(413, "PayloadTooLarge") == (False, False, "rejected")
    assert of(504, "GatewayTimeout") == (True, False, "server")
    text = str(classify(FakeServiceError(404, "NotAuthorizedOrNotFound"), TOPIC, None))
    assert f"topic OCID {TOPIC} and" in text  # no endpoint override to name


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after(formatdate(now + 30), now=now) == 30.0  # "-0000" is GMT too
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None


def test_connection_reset_is_retryable_and_may_duplicate(sink: OnsSink, sim: OnsSimulator) -> None:
    sim.inject("reset")
    err = publish_error(sink)
    assert (err.kind, err.retryable, err.config_level) == ("network", True, False)
    assert "Connection reset by peer" in str(err)
    assert "twice" in str(err)
    assert "sdk_troubleshooting" not in str(err)  # the SDK's boilerplate stays out
    sink.publish(message())
    assert len(sim.accepted) == 1


def test_connection_refused_sent_nothing(oci: ModuleType, oci_config: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = OnsSink(
        PublisherConfig(
            topic_id=TOPIC, endpoint=f"http://127.0.0.1:{port}", oci_config_file=str(oci_config)
        )
    )
    try:
        err = publish_error(sink)
    finally:
        sink.close()
    assert (err.kind, err.retryable, err.config_level) == ("network", True, False)
    assert f"cannot reach OCI Notifications at http://127.0.0.1:{port}" in str(err)
    assert "Connection refused" in str(err)
    assert "twice" not in str(err)


def test_read_timeout_is_retryable_and_the_service_may_still_accept(
    make_sink: Callable[..., OnsSink], sim: OnsSimulator
) -> None:
    sink = make_sink(timeout_seconds=0.5)
    sim.inject("slow", delay=1.2)
    err = publish_error(sink)
    assert (err.kind, err.retryable, err.config_level) == ("timeout", True, False)
    assert "did not answer within 0.5 s" in str(err)
    # The documented duplicate window: the answer was lost, but the message went through.
    [accepted] = sim.wait_for(1, timeout=5)
    assert json.loads(accepted.body)["id"] == message().entry_id


def test_circuit_breaker_never_opens(sink: OnsSink, sim: OnsSimulator, oci: ModuleType) -> None:
    assert isinstance(
        sink.client().base_client.circuit_breaker_strategy,
        oci.circuit_breaker.NoCircuitBreakerStrategy,
    )
    sim.inject("503", times=15)
    for _ in range(15):
        err = publish_error(sink)
        # An open breaker would fail fast with CircuitBreakerError, without a request.
        assert err.kind == "server" and "503 ServiceUnavailable" in str(err)
    assert [r.status for r in sim.rejected] == [503] * 15
    receipt = sink.publish(message())
    assert [a.message_id for a in sim.accepted] == [receipt]


# --- webhook: a loopback receiver -----------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    echo: bool = False  # answer with the request's headers, as some debugging endpoints do


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.received: list[Received] = []
        self.stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                reply = receiver.replies.popleft() if receiver.replies else Reply()
                if reply.delay and receiver.stopping.wait(reply.delay):
                    return
                echoed = {"authorization": self.headers.get("Authorization")}
                payload = json.dumps(echoed).encode() if reply.echo else reply.body
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/atomsync"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    try:
        yield rx
    finally:
        rx.stop()


def webhook(receiver: Receiver, **overrides: Any) -> WebhookSink:
    values: dict[str, Any] = {"kind": "webhook", "url": receiver.url, "timeout_seconds": 5.0}
    values.update(overrides)
    return WebhookSink(PublisherConfig(**values))


def test_webhook_post_follows_the_contract(receiver: Receiver) -> None:
    sink = webhook(receiver, hmac_secret=SECRET, bearer_token=TOKEN)
    receiver.replies.append(Reply(200, {"X-Request-Id": "rx-1"}))
    msg = message()
    assert sink.publish(msg) == "rx-1"
    [got] = receiver.received
    assert got.path == "/hooks/atomsync"
    assert got.body == msg.body_text().encode("utf-8")
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Atomsync-Event-Id"] == msg.entry_id
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert got.headers["User-Agent"].startswith("atomsync/")
    sent = got.headers["X-Atomsync-Signature"]
    assert sent.startswith("sha256=")
    # A subscriber's check, written independently of the sink.
    expected = hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(sent, f"sha256={expected}")
    assert sent == signature(SECRET, got.body)
    wrong = hmac.new(b"not-the-secret", got.body, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(sent, f"sha256={wrong}")
    sink.close()


def test_webhook_without_secret_or_token_sends_neither(receiver: Receiver) -> None:
    sink = webhook(receiver)
    assert sink.publish(message()) == "200"
    [got] = receiver.received
    assert "X-Atomsync-Signature" not in got.headers
    assert "Authorization" not in got.headers


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_webhook_any_2xx_is_accepted(receiver: Receiver, status: int) -> None:
    receiver.replies.append(Reply(status))
    assert webhook(receiver).publish(message()) == str(status)


def webhook_error(receiver: Receiver, reply: Reply, **overrides: Any) -> SinkError:
    receiver.replies.append(reply)
    sink = webhook(receiver, **overrides)
    try:
        return publish_error(sink)
    finally:
        sink.close()


@pytest.mark.parametrize(
    ("reply", "kind", "retry_after"),
    [
        (Reply(429, {"Retry-After": "7"}), "throttled", 7.0),
        (Reply(503, {"Retry-After": "12"}), "server", 12.0),
        (Reply(500), "server", None),
        (Reply(502, {"Retry-After": "later"}), "server", None),
        (Reply(408), "server", None),
    ],
    ids=["429", "503", "500", "502-bad-retry-after", "408"],
)
def test_webhook_transient_answers_are_retried(
    receiver: Receiver, reply: Reply, kind: str, retry_after: Optional[float]
) -> None:
    err = webhook_error(receiver, reply)
    assert (err.retryable, err.config_level, err.kind) == (True, False, kind)
    assert err.retry_after == retry_after
    assert f"webhook answered {reply.status}" in str(err)


def test_webhook_retry_after_as_http_date(receiver: Receiver) -> None:
    err = webhook_error(
        receiver, Reply(503, {"Retry-After": formatdate(time.time() + 90, usegmt=True)})
    )
    assert err.retry_after is not None and 80 < err.retry_after <= 90


@pytest.mark.parametrize(
    ("status", "names"),
    [
        (401, "publisher.bearer_token"),
        (403, "publisher.hmac_secret"),
        (404, "publisher.url"),
        (405, "publisher.url"),
    ],
)
def test_webhook_setup_answers_are_config_level(
    receiver: Receiver, status: int, names: str
) -> None:
    err = webhook_error(receiver, Reply(status))
    assert err.config_level and err.retryable
    assert names in str(err)


@pytest.mark.parametrize("status", [400, 422])
def test_webhook_rejections_are_permanent_and_say_why(receiver: Receiver, status: int) -> None:
    body = b'{"error": "PersonNumber\\n is required",\n "pad": "' + b"x" * 500 + b'tail"}'
    err = webhook_error(receiver, Reply(status, {"Content-Type": "application/json"}, body))
    assert (err.retryable, err.config_level, err.kind) == (False, False, "rejected")
    text = str(err)
    assert text.startswith(f"webhook answered {status} ")
    assert '"PersonNumber\\n is required", "pad": "xxx' in text  # the reason, on one line
    assert "tail" not in text and len(text) < 300


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_webhook_redirect_is_not_followed(receiver: Receiver, status: int) -> None:
    elsewhere = receiver.url.replace("/hooks/atomsync", "/moved?token=abc")
    err = webhook_error(receiver, Reply(status, {"Location": elsewhere}))
    assert [r.path for r in receiver.received] == ["/hooks/atomsync"]  # one POST, nothing more
    assert err.config_level and err.kind == "not_found"
    assert "not followed" in str(err) and "publisher.url" in str(err)
    assert "/moved" in str(err) and "token=abc" not in str(err)


def test_webhook_timeout_is_retryable(receiver: Receiver) -> None:
    err = webhook_error(receiver, Reply(200, delay=2.0), timeout_seconds=0.3)
    assert (err.retryable, err.config_level, err.kind) == (True, False, "timeout")
    assert "did not answer within 0.3 s" in str(err)


def test_webhook_connection_refused_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = WebhookSink(
        PublisherConfig(kind="webhook", url=f"http://127.0.0.1:{port}/hook?key=k3y-in-query")
    )
    err = publish_error(sink)
    assert (err.retryable, err.config_level, err.kind) == (True, False, "network")
    assert str(err) == f"cannot reach the webhook at http://127.0.0.1:{port}: Connection refused"


def test_no_webhook_error_reveals_the_secret_or_token(receiver: Receiver) -> None:
    replies = [
        Reply(400, echo=True),
        Reply(401, echo=True),
        Reply(403, echo=True),
        Reply(404, echo=True),
        Reply(302, {"Location": receiver.url}),
        Reply(422, body=f"bad token {TOKEN} and secret {SECRET}".encode()),
        Reply(429, echo=True),
        Reply(503, echo=True),
        Reply(200, delay=2.0),
    ]
    messages = []
    for reply in replies:
        err = webhook_error(
            receiver, reply, hmac_secret=SECRET, bearer_token=TOKEN, timeout_seconds=0.3
        )
        messages.append(str(err))
    assert "[redacted]" in messages[0]  # the echoed Authorization header was there
    for text in messages:
        assert TOKEN not in text and SECRET not in text, text
    assert SECRET not in repr(PublisherConfig(hmac_secret=SECRET, bearer_token=TOKEN))
    assert TOKEN not in repr(PublisherConfig(hmac_secret=SECRET, bearer_token=TOKEN))


# --- stdout ---------------------------------------------------------------------------------------


def test_stdout_writes_one_readable_json_line_per_message() -> None:
    out = io.StringIO()
    sink = StdoutSink(out)
    first, second = message("a", name="Zoë Åström"), message("b", name="山田 太郎")
    assert sink.publish(first) == first.key
    assert sink.publish(second) == second.key
    lines = out.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == 3  # one line each, newline-terminated
    assert [json.loads(line) for line in lines[:2]] == [
        {"title": first.title, "body": first.body},
        {"title": second.title, "body": second.body},
    ]
    assert "Zoë Åström" in lines[0] and "山田 太郎" in lines[1]  # not \\u escapes
    assert "\\u" not in out.getvalue()


def test_stdout_defaults_to_the_current_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    StdoutSink().publish(message())
    out = capsys.readouterr().out
    assert json.loads(out)["body"]["id"] == message().entry_id


def test_stdout_write_failure_is_a_sink_error() -> None:
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    err = publish_error(StdoutSink(ClosedPipe()))
    assert err.retryable and err.kind == "output"
    assert "Broken pipe" in str(err)


# --- PacedSink ------------------------------------------------------------------------------------


class Recorder:
    """An inner sink that accepts everything; `destination` as the real sinks have it."""

    name = "recorder"
    max_request_bytes: Optional[int] = 1234

    def __init__(self, default_topic: Optional[str] = None) -> None:
        self.published: list[Message] = []
        self.default_topic = default_topic
        self.closed = False

    def destination(self, message: Message) -> str:
        return message.topic_id or self.default_topic or ""

    def publish(self, message: Message) -> str:
        self.published.append(message)
        return f"r{len(self.published)}"

    def close(self) -> None:
        self.closed = True


class FakeSleep:
    def __init__(self, answers: Optional[list[bool]] = None) -> None:
        self.waits: list[float] = []
        self.answers = answers or []

    def __call__(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return self.answers.pop(0) if self.answers else True


@pytest.mark.parametrize("rate", [60.0, 30.0, 600.0])
def test_paced_sink_spaces_requests_at_the_rate(rate: float) -> None:
    inner, sleep = Recorder(), FakeSleep()
    paced = PacedSink(inner, rate, sleep)
    assert (paced.name, paced.max_request_bytes) == ("recorder", 1234)
    receipts = [paced.publish(message(f"e{i}", topic_id=TOPIC)) for i in range(5)]
    assert receipts == ["r1", "r2", "r3", "r4", "r5"]
    spacing = 60.0 / rate / SAFETY
    # The fake sleep returns at once, so each wait is a further `spacing` into the future.
    assert len(sleep.waits) == 4
    for k, wait in enumerate(sleep.waits, start=1):
        assert wait == pytest.approx(k * spacing, abs=0.05)
    gaps = [b - a for a, b in zip(sleep.waits, sleep.waits[1:])]
    assert all(gap == pytest.approx(spacing, abs=0.05) for gap in gaps)


def test_paced_sink_has_one_bucket_per_topic() -> None:
    inner, sleep = Recorder(default_topic=TOPIC), FakeSleep()
    paced = PacedSink(inner, 60, sleep)
    paced.publish(message("a", topic_id=TOPIC))
    paced.publish(message("b", topic_id=OTHER_TOPIC))
    assert sleep.waits == []  # each topic's first message goes at once
    paced.publish(message("c", topic_id=OTHER_TOPIC))
    paced.publish(message("d"))  # the default topic, by name or by omission, is one bucket
    assert sleep.waits == [pytest.approx(60 / SAFETY / 60, abs=0.05)] * 2
    assert set(paced.buckets) == {TOPIC, OTHER_TOPIC}


def test_paced_sink_asks_the_real_sinks_where_a_message_goes(oci_config: Path) -> None:
    ons = OnsSink(PublisherConfig(topic_id=TOPIC, oci_config_file=str(oci_config)))
    paced = PacedSink(ons, 60)
    assert paced.destination(message()) == TOPIC
    assert paced.destination(message(topic_id=TOPIC)) == TOPIC
    assert paced.destination(message(topic_id=OTHER_TOPIC)) == OTHER_TOPIC
    hook = PacedSink(WebhookSink(PublisherConfig(kind="webhook", url="http://127.0.0.1:9/h")), 60)
    # One URL takes every feed's events: topic_id does not split the rate there.
    assert hook.destination(message(topic_id=OTHER_TOPIC)) == "http://127.0.0.1:9/h"
    assert hook.destination(message()) == "http://127.0.0.1:9/h"
    assert PacedSink(StdoutSink(), 60).destination(message(topic_id=TOPIC)) == "stdout"


def test_paced_sink_interrupted_while_waiting_publishes_nothing() -> None:
    inner = Recorder()
    sleep = FakeSleep(answers=[False])
    paced = PacedSink(inner, 60, sleep)
    paced.publish(message("a"))
    with pytest.raises(Interrupted):
        paced.publish(message("b"))
    assert [m.entry_id for m in inner.published] == ["a"]
    # The token was given back: the next message waits one spacing, not two.
    paced.publish(message("c"))
    assert sleep.waits[1] == pytest.approx(60 / 60 / SAFETY, abs=0.05)
    paced.close()
    assert inner.closed


# --- RetryingSink ---------------------------------------------------------------------------------


class Flaky:
    """Raises the scripted errors in turn, then accepts."""

    name = "flaky"
    max_request_bytes: Optional[int] = None

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.closed = False

    def publish(self, message: Message) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    def close(self) -> None:
        self.closed = True


def transient(retry_after: Optional[float] = None, name: str = "boom") -> SinkError:
    return SinkError(name, retryable=True, kind="server", retry_after=retry_after)


class UpperBound(random.Random):
    """Jitter that always picks the longest wait, so the schedule is visible."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_retry_honours_retry_after() -> None:
    inner, sleep = Flaky(transient(7), transient(30)), FakeSleep()
    sink = RetryingSink(inner, attempts=3, max_delay=30, sleep=sleep)
    assert sink.publish(message()) == "ok"
    assert inner.calls == 3
    assert sleep.waits == [7, 30]


def test_retry_after_beyond_max_delay_is_left_to_the_per_feed_back_off() -> None:
    # Retrying after max_delay would come sooner than the service asked: give up at once.
    inner, sleep = Flaky(transient(7), transient(100)), FakeSleep()
    sink = RetryingSink(inner, attempts=3, max_delay=30, sleep=sleep)
    with pytest.raises(SinkError) as caught:
        sink.publish(message())
    assert caught.value.retry_after == 100
    assert inner.calls == 2
    assert sleep.waits == [7]


def test_retry_backs_off_exponentially_up_to_max_delay() -> None:
    inner, sleep = Flaky(*[transient() for _ in range(5)]), FakeSleep()
    sink = RetryingSink(inner, attempts=6, base_delay=1, max_delay=5, sleep=sleep, rng=UpperBound())
    assert sink.publish(message()) == "ok"
    assert sleep.waits == [1, 2, 4, 5, 5]


def test_retry_jitter_stays_within_the_bound() -> None:
    inner, sleep = Flaky(*[transient() for _ in range(4)]), FakeSleep()
    RetryingSink(inner, attempts=5, base_delay=2, max_delay=60, sleep=sleep).publish(message())
    assert [0 <= w <= 2 * 2**k for k, w in enumerate(sleep.waits)] == [True] * 4


def test_retry_gives_up_after_attempts_with_the_last_error() -> None:
    inner, sleep = (
        Flaky(transient(name="one"), transient(name="two"), transient(name="three")),
        FakeSleep(),
    )
    sink = RetryingSink(inner, attempts=3, sleep=sleep, rng=UpperBound())
    with pytest.raises(SinkError, match="three"):
        sink.publish(message())
    assert inner.calls == 3 and len(sleep.waits) == 2


@pytest.mark.parametrize(
    "error",
    [
        SinkError("401", retryable=True, kind="auth", config_level=True),
        SinkError("404", retryable=True, kind="not_found", config_level=True),
        SinkError("400", retryable=False, kind="rejected"),
    ],
    ids=["config-level-retryable", "not-found", "permanent"],
)
def test_retry_leaves_setup_and_permanent_errors_alone(error: SinkError) -> None:
    inner, sleep = Flaky(error), FakeSleep()
    with pytest.raises(SinkError) as caught:
        RetryingSink(inner, attempts=5, sleep=sleep).publish(message())
    assert caught.value is error
    assert inner.calls == 1 and sleep.waits == []


def test_retry_interrupted_while_waiting() -> None:
    first = transient(3)
    inner, sleep = Flaky(first), FakeSleep(answers=[False])
    with pytest.raises(Interrupted) as caught:
        RetryingSink(inner, attempts=3, sleep=sleep).publish(message())
    assert caught.value.__cause__ is first
    assert inner.calls == 1 and sleep.waits == [3]


def test_retry_passes_an_interruption_from_pacing_through() -> None:
    inner, sleep = Flaky(Interrupted()), FakeSleep()
    with pytest.raises(Interrupted):
        RetryingSink(inner, attempts=3, sleep=sleep).publish(message())
    assert inner.calls == 1 and sleep.waits == []


def test_retry_against_the_simulator(sink: OnsSink, sim: OnsSimulator) -> None:
    sim.inject("503")
    sim.inject("429", retry_after=2)
    sleep = FakeSleep()
    receipt = RetryingSink(sink, attempts=3, sleep=sleep, rng=UpperBound()).publish(message())
    assert sleep.waits == [1.0, 2.0]
    assert [r.status for r in sim.rejected] == [503, 429]
    assert [a.message_id for a in sim.accepted] == [receipt]


# --- build_sink and wrap --------------------------------------------------------------------------

BASE_YAML = """
hcm:
  base_url: https://pod.fa.us-ashburn-1.oraclecloud.com
  username: INTEGRATION_USER
  password: pw
poll:
  backoff_max_seconds: {backoff}
publisher:
{publisher}
"""


def load(publisher: str, backoff: float = 300) -> configuration.Config:
    text = BASE_YAML.format(backoff=backoff, publisher=textwrap.indent(publisher.strip(), "  "))
    return configuration.parse(text, env={})


def test_build_sink_by_kind() -> None:
    ons = build_sink(load(f"topic_id: {TOPIC}\nmax_messages_per_minute: 30"))
    assert isinstance(ons, OnsSink) and ons.cfg.topic_id == TOPIC
    hook = build_sink(load("kind: webhook\nurl: https://example.com/hook\nhmac_secret: s"))
    assert isinstance(hook, WebhookSink) and hook.url == "https://example.com/hook"
    assert isinstance(build_sink(load("kind: stdout")), StdoutSink)


def test_webhook_and_stdout_sinks_never_import_oci() -> None:
    script = textwrap.dedent(
        """
        import sys
        from atomsync import config
        from atomsync.publish import build_sink, wrap
        base = "hcm: {base_url: https://pod, username: u, password: p}\\n"
        for publisher in ("{kind: stdout}", "{kind: webhook, url: https://example.com/h}"):
            cfg = config.parse(base + "publisher: " + publisher + "\\n", env={})
            wrap(build_sink(cfg), cfg, lambda s: True).close()
        print(sorted(m for m in sys.modules if m == "oci" or m.startswith("oci.")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_wrap_paces_every_attempt_inside_the_retries() -> None:
    cfg = load(f"topic_id: {TOPIC}\nmax_messages_per_minute: 60", backoff=45)
    inner, sleep = Flaky(transient(0), transient(0)), FakeSleep()
    sink = wrap(inner, cfg, sleep)
    assert isinstance(sink, RetryingSink) and sink.max_delay == 45
    paced = sink.inner
    assert isinstance(paced, PacedSink) and paced.inner is inner and paced.rate == 60
    assert sink.publish(message()) == "ok"
    # retry wait, pacing wait, retry wait, pacing wait: every attempt spent a token.
    spacing = 1 / SAFETY
    assert sleep.waits == [
        0,
        pytest.approx(spacing, abs=0.05),
        0,
        pytest.approx(2 * spacing, abs=0.05),
    ]
    sink.close()
    assert inner.closed


def test_wrap_caps_the_retry_delay_at_a_minute() -> None:
    sink = wrap(Flaky(), load("kind: stdout", backoff=900), FakeSleep())
    assert isinstance(sink, RetryingSink) and sink.max_delay == 60
