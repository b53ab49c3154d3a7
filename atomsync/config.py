"""Configuration: load YAML, interpolate `${ENV}`, validate into frozen dataclasses.

The only module that knows YAML. Every error is a ConfigError naming the key (exit 78), and
unknown keys are errors because they are almost always typos. Contract: design.md §3.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import ipaddress
import math
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union
from urllib.parse import urlsplit

import yaml

from atomsync import catalog
from atomsync.errors import ConfigError
from atomsync.timeutil import parse_timestamp

CONFIG_ENV = "ATOMSYNC_CONFIG"
DEFAULT_PATHS = (Path("atomsync.yaml"), Path("/etc/atomsync/atomsync.yaml"))
CREDENTIAL_NAME = "hcm_password"  # LoadCredential=hcm_password:... in the systemd unit

CURSORS = ("updated", "published")
SINK_KINDS = ("oci_notifications", "webhook", "stdout")
AUTH_KINDS = ("api_key", "instance_principal", "resource_principal")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
PERMANENT_POLICIES = ("deadletter", "halt")


@dataclass(frozen=True)
class StartAt:
    """Where a feed with no state begins: `now`, `beginning`, or a fixed instant."""

    kind: str  # "now" | "beginning" | "at"
    at_ms: Optional[int] = None


@dataclass(frozen=True)
class HcmConfig:
    base_url: str
    username: str
    password: str = field(repr=False)
    password_file: Optional[str] = None  # where the password came from, if a file
    page_size: int = 25
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 5.0
    verify_tls: Union[bool, str] = True
    allow_insecure_http: bool = False
    max_response_bytes: int = 10 * 1024 * 1024
    max_connections: int = 4


@dataclass(frozen=True)
class PollConfig:
    interval_seconds: float = 30.0
    overlap_seconds: float = 300.0
    sweep_interval_seconds: float = 3600.0  # 0 turns the late-arrival sweep off
    sweep_lookback_seconds: float = 86400.0
    backoff_max_seconds: float = 300.0
    shutdown_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class FeedConfig:
    name: str  # unique; names the state file
    collection: str  # HCM collection, as Oracle spells it
    workspace: str
    path: str  # URL path below hcm.base_url
    cursor: str = "updated"
    start_at: StartAt = StartAt("now")
    topic_id: Optional[str] = None  # overrides publisher.topic_id
    title: str = ""  # str.format template over Context fields
    filters: tuple[tuple[str, frozenset[str]], ...] = ()


@dataclass(frozen=True)
class StateConfig:
    dir: Path
    retention_seconds: float


@dataclass(frozen=True)
class PublisherConfig:
    kind: str = "oci_notifications"
    topic_id: Optional[str] = None
    endpoint: Optional[str] = None
    auth: str = "api_key"
    oci_config_file: str = "~/.oci/config"
    oci_profile: str = "DEFAULT"
    max_messages_per_minute: float = 60.0
    timeout_seconds: float = 20.0
    on_permanent_failure: str = "deadletter"
    url: Optional[str] = None
    hmac_secret: Optional[str] = field(default=None, repr=False)
    bearer_token: Optional[str] = field(default=None, repr=False)
    secret_files: tuple[str, ...] = ()  # hmac_secret_file / bearer_token_file, if used


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "text"
    file: Optional[str] = None


@dataclass(frozen=True)
class MetricsConfig:
    listen: Optional[str] = None
    textfile: Optional[str] = None


@dataclass(frozen=True)
class Config:
    hcm: HcmConfig
    poll: PollConfig
    feeds: tuple[FeedConfig, ...]
    state: StateConfig
    publisher: PublisherConfig
    logging: LoggingConfig
    metrics: MetricsConfig
    source: Optional[Path] = None

    def feed(self, name: str) -> FeedConfig:
        for f in self.feeds:
            if f.name == name:
                return f
        names = ", ".join(f.name for f in self.feeds)
        raise ConfigError("feeds", f"no feed named {name!r} is configured (configured: {names})")

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for redaction of log output, including the Basic-auth token
        (debug output of HTTP libraries shows the header, not the password)."""
        basic = base64.b64encode(f"{self.hcm.username}:{self.hcm.password}".encode()).decode()
        values = (
            self.hcm.password,
            basic,
            self.publisher.hmac_secret,
            self.publisher.bearer_token,
        )
        return tuple(v for v in values if v)


# --------------------------------------------------------------------------- locating


def find_config(explicit: Optional[str], env: Mapping[str, str]) -> Path:
    """-c PATH, then $ATOMSYNC_CONFIG, then ./atomsync.yaml, then /etc/atomsync/atomsync.yaml."""
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    for candidate in DEFAULT_PATHS:
        if candidate.exists():
            return candidate
    tried = ", ".join(str(p) for p in DEFAULT_PATHS)
    raise ConfigError(
        "", f"no configuration file: pass -c PATH or set ${CONFIG_ENV} (looked for {tried})"
    )


def load(path: Path, env: Optional[Mapping[str, str]] = None) -> Config:
    env = os.environ if env is None else env
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read configuration file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{path} is not UTF-8 text") from None
    return parse(text, env=env, source=path)


class _Loader(yaml.SafeLoader):
    """Safe YAML without implicit timestamps: `start_at: 2024-03-04T00:00:00Z` stays the
    string the user wrote, and is parsed by the same code as every other time. Aliases
    (`*name`) are refused: a configuration never needs them, and a few hundred bytes of
    nested aliases expand to millions of nodes (or to a cycle)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in the configuration", mark
            )
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse(text: str, *, env: Mapping[str, str], source: Optional[Path] = None) -> Config:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError("", f"{source or 'configuration'}: nested too deeply") from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError("", f"{source or 'configuration'}: {problem}{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", "the configuration must be a YAML mapping of sections (hcm:, ...)")
    base = source.parent if source is not None else Path.cwd()
    try:
        return _build(_Section(_interpolate(data, "", env), ""), env, base, source)
    except RecursionError:
        raise ConfigError("", f"{source or 'configuration'}: nested too deeply") from None


# --------------------------------------------------------------------------- interpolation

_VAR = re.compile(r"\$\$|\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _interpolate(value: Any, key: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, _join(key, str(k)), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{key}[{i}]", env) for i, v in enumerate(value)]
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name = m.group(1)
            if not _NAME.match(name):
                raise ConfigError(key, f"${{{name}}} is not a valid environment variable name")
            if name not in env:
                raise ConfigError(key, f"environment variable {name} is not set")
            return env[name]

        return _VAR.sub(repl, value)
    return value


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# --------------------------------------------------------------------------- section reader

T = TypeVar("T")
_MISSING: Any = object()


class _Section:
    """One mapping of the YAML tree; remembers which keys were read to reject the rest."""

    def __init__(self, data: Any, key: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(key, "must be a mapping")
        self.data: dict[Any, Any] = data
        self.key = key
        self.seen: set[str] = set()

    def k(self, name: str) -> str:
        return _join(self.key, name)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def raw(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def value(self, name: str, convert: Callable[[str, Any], T], default: Any = _MISSING) -> T:
        value = self.raw(name)
        if value is None:
            if default is _MISSING:
                # A misspelt required key shows up as "missing": name the typo instead.
                unknown = [str(k) for k in self.data if k not in self.seen]
                close = difflib.get_close_matches(name, unknown, n=1)
                if close:
                    raise ConfigError(self.k(close[0]), f"unknown key (did you mean {name!r}?)")
                raise ConfigError(self.k(name), "required key is missing")
            return default  # type: ignore[no-any-return]
        return convert(self.k(name), value)

    def section(self, name: str) -> _Section:
        return _Section(self.raw(name), self.k(name))

    def finish(self) -> None:
        for name in self.data:
            if name in self.seen:
                continue
            hint = difflib.get_close_matches(str(name), sorted(self.seen), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(self.k(str(name)), f"unknown key{extra}")


# --------------------------------------------------------------------------- converters


def _str(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(key, f"must be a string (got {type(value).__name__})")
    text = str(value).strip()
    if not text:
        raise ConfigError(key, "must not be empty")
    return text


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    raise ConfigError(key, f"must be true or false (got {value!r})")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(key, f"must be a number (got {value!r})")
    number: Optional[float] = None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):  # `${VAR}` always interpolates to a string
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    if number is None or not math.isfinite(number):  # .nan and .inf are YAML numbers too
        raise ConfigError(key, f"must be a number (got {value!r})")
    return number


def _positive(key: str, value: Any) -> float:
    number = _number(key, value)
    if not number > 0:
        raise ConfigError(key, f"must be greater than 0 (got {value!r})")
    return number


def _non_negative(key: str, value: Any) -> float:
    number = _number(key, value)
    if not number >= 0:
        raise ConfigError(key, f"must be 0 or more (got {value!r})")
    return number


def _int_between(low: int, high: int) -> Callable[[str, Any], int]:
    def convert(key: str, value: Any) -> int:
        number = _number(key, value)
        if number != int(number) or not low <= number <= high:
            raise ConfigError(key, f"must be a whole number from {low} to {high} (got {value!r})")
        return int(number)

    return convert


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def convert(key: str, value: Any) -> str:
        text = _str(key, value)
        for c in choices:
            if text.lower() == c.lower():
                return c
        raise ConfigError(key, f"must be one of {', '.join(choices)} (got {value!r})")

    return convert


def _url(key: str, value: Any) -> str:
    text = _str(key, value).rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"must be an http(s) URL (got {text!r})")
    if parts.username or parts.password:
        # Never echo the URL: it holds the secret.
        raise ConfigError(key, "must not contain a user or password; use the separate keys")
    return text


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _start_at(key: str, value: Any) -> StartAt:
    text = _str(key, value)
    if text.lower() in ("now", "beginning"):
        return StartAt(text.lower())
    try:
        return StartAt("at", parse_timestamp(text))
    except (ValueError, OverflowError):
        raise ConfigError(
            key,
            f"must be now, beginning or an ISO 8601 time such as 2024-03-04T00:00:00Z "
            f"(got {text!r})",
        ) from None


def _path(base: Path) -> Callable[[str, Any], Path]:
    def convert(key: str, value: Any) -> Path:
        p = Path(os.path.expanduser(_str(key, value)))
        return p if p.is_absolute() else base / p

    return convert


def _read_secret(key: str, path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path} is not UTF-8 text") from None
    # Editors and `echo` add one trailing newline; it is never part of the secret.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ConfigError(key, f"{path} is empty")
    return text


def _secret(
    s: _Section, name: str, base: Path, *, required: bool, credential: Optional[Path] = None
) -> tuple[Optional[str], Optional[str]]:
    """A secret given inline (`name`), in a file (`name_file`), or as a systemd credential;
    returned with the file it came from (for the permission check), if any."""
    inline, file_key = s.has(name), f"{name}_file"
    if inline and s.has(file_key):
        raise ConfigError(s.k(file_key), f"give either {name} or {file_key}, not both")
    if inline:
        return s.value(name, _str), None
    s.raw(name)
    if s.has(file_key):
        path = s.value(file_key, _path(base))
        return _read_secret(s.k(file_key), path), str(path)
    s.raw(file_key)
    if credential is not None and credential.is_file():
        # systemd keeps credentials private to the service; no permission check needed.
        return _read_secret(f"$CREDENTIALS_DIRECTORY/{credential.name}", credential), None
    if required:
        raise ConfigError(s.k(name), f"required key is missing (or set {file_key})")
    return None, None


# --------------------------------------------------------------------------- sections


def _build(top: _Section, env: Mapping[str, str], base: Path, source: Optional[Path]) -> Config:
    hcm = _hcm(top.section("hcm"), env, base)
    poll = _poll(top.section("poll"))
    publisher = _publisher(top.section("publisher"), base)
    feeds = _feeds(top.raw("feeds"), hcm)
    state = _state(top.section("state"), env, base, poll)
    logging_ = _logging(top.section("logging"), base)
    metrics = _metrics(top.section("metrics"), base)
    top.finish()
    if publisher.kind == "oci_notifications" and not publisher.topic_id:
        missing = [f.name for f in feeds if not f.topic_id]
        if missing:
            raise ConfigError(
                "publisher.topic_id",
                "required for publisher.kind oci_notifications "
                f"(feeds without their own topic_id: {', '.join(missing)})",
            )
    return Config(hcm, poll, feeds, state, publisher, logging_, metrics, source)


def _hcm(s: _Section, env: Mapping[str, str], base: Path) -> HcmConfig:
    base_url = s.value("base_url", _url)
    if urlsplit(base_url).path not in ("", "/"):
        raise ConfigError(
            s.k("base_url"),
            "give the pod URL only, e.g. https://POD.fa.REGION.oraclecloud.com "
            "(atomsync adds /hcmRestApi/atomservlet/...; feeds[].path covers odd tenants)",
        )
    insecure = s.value("allow_insecure_http", _bool, False)
    if base_url.startswith("http://") and not insecure and not is_loopback(base_url):
        raise ConfigError(
            s.k("base_url"),
            "plain http:// would send the HCM password unencrypted; use https:// "
            "(or set hcm.allow_insecure_http: true if you really mean it)",
        )
    creds = env.get("CREDENTIALS_DIRECTORY")
    credential = Path(creds) / CREDENTIAL_NAME if creds else None
    password, password_file = _secret(s, "password", base, required=True, credential=credential)
    assert password is not None
    verify_raw = s.raw("verify_tls")
    verify: Union[bool, str] = True
    if verify_raw is not None:
        if isinstance(verify_raw, bool) or (
            isinstance(verify_raw, str) and verify_raw.lower() in ("true", "false")
        ):
            verify = _bool(s.k("verify_tls"), verify_raw)
        else:
            bundle = _path(base)(s.k("verify_tls"), verify_raw)
            if not bundle.exists():
                raise ConfigError(s.k("verify_tls"), f"CA bundle {bundle} does not exist")
            verify = str(bundle)
    cfg = HcmConfig(
        base_url=base_url,
        username=s.value("username", _str),
        password=password,
        password_file=password_file,
        page_size=s.value("page_size", _int_between(1, 1000), 25),
        timeout_seconds=s.value("timeout_seconds", _positive, 30.0),
        connect_timeout_seconds=s.value("connect_timeout_seconds", _positive, 5.0),
        verify_tls=verify,
        allow_insecure_http=insecure,
        max_response_bytes=s.value("max_response_bytes", _int_between(4096, 2**31), 10 << 20),
        max_connections=s.value("max_connections", _int_between(1, 16), 4),
    )
    s.finish()
    return cfg


def _poll(s: _Section) -> PollConfig:
    cfg = PollConfig(
        interval_seconds=s.value("interval_seconds", _positive, 30.0),
        overlap_seconds=s.value("overlap_seconds", _non_negative, 300.0),
        sweep_interval_seconds=s.value("sweep_interval_seconds", _non_negative, 3600.0),
        sweep_lookback_seconds=s.value("sweep_lookback_seconds", _non_negative, 86400.0),
        backoff_max_seconds=s.value("backoff_max_seconds", _positive, 300.0),
        shutdown_timeout_seconds=s.value("shutdown_timeout_seconds", _positive, 10.0),
    )
    s.finish()
    return cfg


def _feeds(raw: Any, hcm: HcmConfig) -> tuple[FeedConfig, ...]:
    if raw is None:
        raw = ["newhire"]
    if not isinstance(raw, list) or not raw:
        raise ConfigError("feeds", "must be a non-empty list of feeds")
    feeds: list[FeedConfig] = []
    for i, item in enumerate(raw):
        feed = _feed(_Section({"name": item} if isinstance(item, str) else item, f"feeds[{i}]"))
        if any(f.name == feed.name for f in feeds):
            raise ConfigError(f"feeds[{i}].name", f"feed {feed.name!r} is configured twice")
        feeds.append(feed)
    return tuple(feeds)


_FEED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def _feed(s: _Section) -> FeedConfig:
    name = s.value("name", _str)
    if not _FEED_NAME.match(name):
        raise ConfigError(s.k("name"), "use letters, digits, '.', '_' or '-' (it names a file)")
    collection = s.value("collection", _str, name)
    known = catalog.lookup(collection)
    workspace = s.value("workspace", _str, None)
    path = s.value("path", _str, None)
    if known is None and workspace is None and path is None:
        key = s.k("collection") if s.has("collection") else s.k("name")
        if collection in catalog.NOT_COLLECTIONS:
            hint = f"HCM spells it {catalog.NOT_COLLECTIONS[collection]!r}"
        else:
            close = difflib.get_close_matches(collection, list(catalog.COLLECTIONS), n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "known: " + ", ".join(catalog.COLLECTIONS)
            )
        raise ConfigError(
            key,
            f"unknown HCM collection {collection!r} ({hint}); set workspace: if your tenant "
            "really has it",
        )
    if known is not None:
        collection = known.name
    workspace = workspace or (known.workspace if known else "")
    if path is None:
        path = f"/hcmRestApi/atomservlet/{workspace}/{collection}"
    elif not path.startswith("/"):
        raise ConfigError(s.k("path"), "must start with / (a path below hcm.base_url)")
    title = s.value("title", _str, known.title_template if known else "")
    if title:
        try:
            list(string.Formatter().parse(title))
        except ValueError as exc:
            raise ConfigError(s.k("title"), f"not a valid template: {exc}") from None
    cfg = FeedConfig(
        name=name,
        collection=collection,
        workspace=workspace,
        path=path.rstrip("/"),
        cursor=s.value("cursor", _choice(*CURSORS), "updated"),
        start_at=s.value("start_at", _start_at, StartAt("now")),
        topic_id=s.value("topic_id", _str, None),
        title=title,
        filters=_filters(s.k("filter"), s.raw("filter")),
    )
    s.finish()
    return cfg


def _filters(key: str, raw: Any) -> tuple[tuple[str, frozenset[str]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(key, "must be a mapping of Context field to a value or list of values")
    out = []
    for field_name, wanted in raw.items():
        k = f"{key}.{field_name}"
        values = wanted if isinstance(wanted, list) else [wanted]
        if not values:
            raise ConfigError(k, "needs at least one value")
        out.append((str(field_name), frozenset(_str(k, v) for v in values)))
    return tuple(out)


def _state(s: _Section, env: Mapping[str, str], base: Path, poll: PollConfig) -> StateConfig:
    if s.has("dir"):
        directory = s.value("dir", _path(base))
    elif env.get("STATE_DIRECTORY"):
        # systemd passes a colon-separated list when several StateDirectory= are set.
        directory = Path(env["STATE_DIRECTORY"].split(":")[0])
    else:
        directory = Path.cwd() / "state"
    s.raw("dir")
    floor = max(
        poll.overlap_seconds, poll.sweep_lookback_seconds if poll.sweep_interval_seconds else 0
    )
    retention = s.value("retention_seconds", _positive, floor + 3600.0)
    if retention < floor:
        raise ConfigError(
            s.k("retention_seconds"),
            f"must cover the longest look-back ({floor:g} s from poll.overlap_seconds / "
            "poll.sweep_lookback_seconds), or re-read entries would be published again",
        )
    s.finish()
    return StateConfig(dir=directory, retention_seconds=retention)


def _publisher(s: _Section, base: Path) -> PublisherConfig:
    kind = s.value("kind", _choice(*SINK_KINDS), "oci_notifications")
    endpoint = s.value("endpoint", _url, None)
    url = s.value("url", _url, None)
    if kind == "webhook" and url is None:
        raise ConfigError(s.k("url"), "required for publisher.kind webhook")
    hmac_secret, hmac_file = _secret(s, "hmac_secret", base, required=False)
    bearer_token, token_file = _secret(s, "bearer_token", base, required=False)
    cfg = PublisherConfig(
        kind=kind,
        topic_id=s.value("topic_id", _str, None),
        endpoint=endpoint,
        auth=s.value("auth", _choice(*AUTH_KINDS), "api_key"),
        oci_config_file=s.value("oci_config_file", _str, "~/.oci/config"),
        oci_profile=s.value("oci_profile", _str, "DEFAULT"),
        max_messages_per_minute=s.value("max_messages_per_minute", _positive, 60.0),
        timeout_seconds=s.value("timeout_seconds", _positive, 20.0),
        on_permanent_failure=s.value(
            "on_permanent_failure", _choice(*PERMANENT_POLICIES), "deadletter"
        ),
        url=url,
        hmac_secret=hmac_secret,
        bearer_token=bearer_token,
        secret_files=tuple(f for f in (hmac_file, token_file) if f),
    )
    s.finish()
    return cfg


def _logging(s: _Section, base: Path) -> LoggingConfig:
    file = s.value("file", _path(base), None)
    cfg = LoggingConfig(
        level=s.value("level", _choice(*LOG_LEVELS), "INFO"),
        format=s.value("format", _choice(*LOG_FORMATS), "text"),
        file=str(file) if file else None,
    )
    s.finish()
    return cfg


def _listen(key: str, value: Any) -> str:
    text = _str(key, value)
    _host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(key, f"must be HOST:PORT, e.g. 127.0.0.1:9464 (got {text!r})")
    return text


def _metrics(s: _Section, base: Path) -> MetricsConfig:
    textfile = s.value("textfile", _path(base), None)
    cfg = MetricsConfig(
        listen=s.value("listen", _listen, None), textfile=str(textfile) if textfile else None
    )
    s.finish()
    return cfg
