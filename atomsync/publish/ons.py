"""OCI Notifications sink on the oci SDK (imported here only: it costs 0.4 s and 50 MB).

The SDK's retries and its process-wide circuit breaker are both turned off: the daemon owns
retry and pacing, and a shared breaker would fail publishes silently for 30 s at a time.
"""

from __future__ import annotations

import configparser
import logging
import os
import threading
from typing import Any, Optional

from atomsync.config import PublisherConfig
from atomsync.errors import ConfigError
from atomsync.httputil import never_connected, os_reason, parse_retry_after
from atomsync.message import MAX_REQUEST_BYTES, Message
from atomsync.publish import SinkError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0


def import_oci() -> Any:
    # Eager imports of the whole SDK take ~500 MB; never let an inherited setting do that.
    if os.environ.get("OCI_PYTHON_SDK_LAZY_IMPORTS_DISABLED", "").lower() == "true":
        log.warning("ignoring OCI_PYTHON_SDK_LAZY_IMPORTS_DISABLED=true (it costs ~500 MB)")
        os.environ.pop("OCI_PYTHON_SDK_LAZY_IMPORTS_DISABLED")
    import oci

    return oci


def make_signer_config(cfg: PublisherConfig) -> tuple[dict[str, Any], Any]:
    """(SDK config dict, signer) for the configured auth. Principals make network calls.

    Every problem with an API-key set-up becomes a ConfigError naming the key to fix (exit 78).
    """
    oci = import_oci()
    if cfg.auth == "api_key":
        path = os.path.expanduser(cfg.oci_config_file)
        key = "publisher.oci_config_file"
        where = f"{path} [{cfg.oci_profile}]"
        try:
            config: dict[str, Any] = oci.config.from_file(
                file_location=path, profile_name=cfg.oci_profile
            )
        except oci.exceptions.ConfigFileNotFound:
            raise ConfigError(key, f"OCI config file {path} not found") from None
        except oci.exceptions.ProfileNotFound:
            raise ConfigError(
                "publisher.oci_profile", f"profile [{cfg.oci_profile}] is not in {path}"
            ) from None
        except oci.exceptions.InvalidKeyFilePath:
            raise ConfigError(
                key,
                f"{where}: key_file {_key_file(path, cfg.oci_profile)} does not exist "
                "or is not a file",
            ) from None
        except configparser.Error as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(key, f"{path} is not an OCI config file: {first}") from None
        except OSError as exc:
            raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None
        key_file = os.path.expanduser(str(config.get("key_file", "")))
        try:
            oci.config.validate_config(config)
            signer = oci.signer.Signer.from_config(config)
        except oci.exceptions.InvalidConfig as exc:
            raise ConfigError(key, f"{where} is invalid: {_problems(exc)}") from None
        # MissingPrivateKeyPassphrase is an InvalidPrivateKey, so it must be caught first.
        except oci.exceptions.MissingPrivateKeyPassphrase:
            raise ConfigError(
                key, f"{where}: key_file {key_file} is encrypted: add pass_phrase to the profile"
            ) from None
        except oci.exceptions.InvalidPrivateKey:
            raise ConfigError(
                key,
                f"{where}: key_file {key_file} is not a usable private key "
                "(a public key, not PEM, or a wrong pass_phrase)",
            ) from None
        except OSError as exc:
            raise ConfigError(
                key, f"{where}: cannot read key_file {key_file}: {exc.strerror or exc}"
            ) from None
        return config, signer
    if cfg.auth == "instance_principal":
        signer = oci.auth.signers.InstancePrincipalsSecurityTokenSigner()
    else:
        signer = oci.auth.signers.get_resource_principals_signer()
    return {"region": signer.region}, signer


def _key_file(path: str, profile: str) -> str:
    """The key_file a profile names, read without the SDK (which refused it)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)
        return os.path.expanduser(parser.get(profile, "key_file"))
    except (configparser.Error, OSError):
        return "(unreadable)"


def _problems(exc: Any) -> str:
    """InvalidConfig carries {key: "missing" | "malformed"}; say it in words."""
    detail = exc.args[0] if exc.args else None
    if isinstance(detail, dict):
        return ", ".join(f"{k} is {v}" for k, v in sorted(detail.items()))
    return str(exc)


class OnsSink:
    name = "oci_notifications"
    max_request_bytes: Optional[int] = MAX_REQUEST_BYTES

    def __init__(self, cfg: PublisherConfig) -> None:
        self.cfg = cfg
        self._client: Any = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Build the client now when that needs no network (API keys): bad keys exit 78 at
        start-up. Principal signers call the metadata service, so they wait for the first
        publish (a network hiccup at boot must not become a failed start)."""
        if self.cfg.auth == "api_key":
            self.client()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                oci = import_oci()
                config, signer = make_signer_config(self.cfg)
                kwargs: dict[str, Any] = {
                    "signer": signer,
                    "timeout": (CONNECT_TIMEOUT, self.cfg.timeout_seconds),
                    "retry_strategy": oci.retry.NoneRetryStrategy(),
                    "circuit_breaker_strategy": oci.circuit_breaker.NoCircuitBreakerStrategy(),
                }
                if self.cfg.endpoint:
                    kwargs["service_endpoint"] = self.cfg.endpoint
                self._client = oci.ons.NotificationDataPlaneClient(config, **kwargs)
            return self._client

    def publish(self, message: Message) -> str:
        oci = import_oci()
        topic = message.topic_id or self.cfg.topic_id
        if not topic:
            raise SinkError(
                f"no topic for feed {message.feed}: set publisher.topic_id or the feed's topic_id",
                retryable=False,
                kind="config",
                config_level=True,
            )
        try:
            client = self.client()
        except ConfigError:
            raise
        except Exception as exc:  # principal signers: metadata or auth service unreachable
            raise SinkError(
                f"cannot build the OCI signer ({self.cfg.auth}): {_short(exc)}",
                retryable=True,
                kind="auth",
                config_level=True,
            ) from None
        details = oci.ons.models.MessageDetails(title=message.title, body=message.body_text())
        try:
            response = client.publish_message(topic, details)
        except oci.exceptions.ServiceError as exc:
            raise classify(exc, topic, self.cfg.endpoint) from None
        except (oci.exceptions.ConnectTimeout, oci.exceptions.RequestException) as exc:
            raise self._network_error(oci, exc, client) from None
        except Exception as exc:
            # The breaker is off, but circuitbreaker.CircuitBreakerError is not an oci
            # exception; anything else unexpected is treated as transient, never as success.
            raise SinkError(
                f"publishing failed: {type(exc).__name__}: {_short(exc)}",
                retryable=True,
                kind="network",
            ) from None
        return str(response.data.message_id)

    def destination(self, message: Message) -> str:
        """The topic this message goes to (what pacing counts against)."""
        return message.topic_id or self.cfg.topic_id or ""

    def _network_error(self, oci: Any, exc: BaseException, client: Any) -> SinkError:
        """No HTTP answer. Whether the service may have accepted the message decides the words:
        a connect failure sent nothing, a read timeout or a cut connection may duplicate."""
        endpoint = getattr(getattr(client, "base_client", None), "endpoint", None)
        at = f" at {endpoint}" if endpoint else ""
        reason = os_reason(exc)
        if isinstance(exc, oci.exceptions.ConnectTimeout):
            return SinkError(
                f"cannot connect to OCI Notifications{at} within {CONNECT_TIMEOUT:g} s",
                retryable=True,
                kind="network",
            )
        wrapped = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
        if type(wrapped).__name__ == "ReadTimeout":
            return SinkError(
                f"OCI Notifications{at} did not answer within {self.cfg.timeout_seconds:g} s; "
                "it may have accepted the message, so retrying can deliver it twice",
                retryable=True,
                kind="timeout",
            )
        if never_connected(exc):
            return SinkError(
                f"cannot reach OCI Notifications{at}: {reason}", retryable=True, kind="network"
            )
        return SinkError(
            f"connection to OCI Notifications{at} failed before an answer: {reason}; "
            "it may have accepted the message, so retrying can deliver it twice",
            retryable=True,
            kind="network",
        )

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            session = getattr(getattr(client, "base_client", None), "session", None)
            if session is not None:
                session.close()


def classify(exc: Any, topic: str, endpoint: Optional[str]) -> SinkError:
    """Map an ONS ServiceError to what the protocol does with it (reference §3)."""
    status, code = int(exc.status), str(exc.code or "")
    text = f"OCI Notifications answered {status} {code}: {exc.message}"
    request = f" (opc-request-id {exc.request_id})" if getattr(exc, "request_id", None) else ""
    headers = getattr(exc, "headers", None) or {}
    retry_after = parse_retry_after(_header(headers, "retry-after"))
    if status == 401:
        hint = (
            "this machine's clock is off by more than 5 minutes: fix it (chrony/ntp)"
            if "clock skew" in str(exc.message)
            else "check user, tenancy, fingerprint and key_file in the OCI config and that the "
            "public key is uploaded for that user (or the instance principal's dynamic group), "
            "and that this machine's clock is right"
        )
        return SinkError(f"{text}{request}; {hint}", retryable=True, kind="auth", config_level=True)
    if status == 404:
        where = f" at {endpoint}" if endpoint else ""
        return SinkError(
            f"{text}{request}; check the topic OCID {topic}{where} and that a policy allows "
            "'use ons-topics' in its compartment",
            retryable=True,
            kind="not_found",
            config_level=True,
        )
    if status == 429:
        return SinkError(
            f"{text}{request}", retryable=True, kind="throttled", retry_after=retry_after
        )
    if status >= 500 or (status == 409 and code != "Conflict"):
        return SinkError(f"{text}{request}", retryable=True, kind="server", retry_after=retry_after)
    return SinkError(f"{text}{request}", retryable=False, kind="rejected")


def _header(headers: Any, name: str) -> Optional[str]:
    """A response header by name, whatever the case (the SDK hands over a case-insensitive
    dict; anything else that quacks like a mapping is searched by hand)."""
    items = headers.items() if hasattr(headers, "items") else ()
    for key, value in items:
        if str(key).lower() == name:
            return str(value)
    return None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
