"""Settings: one model of options, read once, validated at start.

Sources, later ones winning: the defaults below, the TOML file (``--config``,
``DIGEST_CONFIG`` or ``./digest.toml`` when present), then ``DIGEST_<NAME>``
environment variables. Relative paths in the file are taken relative to the
file's folder; relative paths elsewhere to the working directory.

``Settings`` is the one declaration: every option's type, default, bounds, check and help,
read by pydantic-settings' own sources (the file, the environment) and validated by
pydantic; the rest of digest uses it as it is. ``OPTIONS`` (the table the docs,
``digest init`` and the command's argument checks are written from) is a view of its fields.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import getaddresses
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, get_origin
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from digest.errors import ConfigError
from digest.store.subscription import CHOICES, FieldError, SubscriptionPatch

DEFAULT_CONFIG_NAME = "digest.toml"


@dataclass(frozen=True)
class Option:
    """One setting as the docs, ``digest init`` and the command's arguments see it: a view of
    one field of ``Settings``, where it is declared."""

    name: str
    kind: type
    default: Any
    help: str
    secret: bool = False
    check: Callable[[Any], str | None] | None = None
    # Bounds of a number: ``low`` and ``high`` inclusive, ``above`` exclusive.
    low: float | None = None
    high: float | None = None
    above: float | None = None

    def parse(self, text: str) -> Any:
        """``text`` (an argument) as this option's value; else a ValueError saying why."""
        from pydantic import TypeAdapter

        bounds = Field(ge=self.low, le=self.high, gt=self.above)
        form: Any = Annotated[self.kind, bounds]
        adapter: TypeAdapter[Any] = TypeAdapter(form)
        try:
            value = adapter.validate_python(text.strip())
        except ValidationError as exc:
            raise ValueError(reason(self, exc.errors()[0])) from None
        problem = self.check(value) if self.check is not None else None
        if problem:
            raise ValueError(problem)
        return value


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _timezone(value: Any) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "is not a known time zone (try UTC or Europe/Berlin)"
    return None


def _url_problem(value: str) -> str | None:
    """Why ``value`` is no usable URL (a bracket left open, a port out of range), or None."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- reading it is the check
    except ValueError:
        return "is not a valid URL"
    return None


def _transport(value: Any) -> str | None:
    if not value:
        return None
    problem = _url_problem(value)
    if problem:
        return problem
    parts = urlsplit(value)
    if parts.scheme not in {"file", "smtp", "smtps"}:
        return "must be a file://, smtp:// or smtps:// URL"
    if parts.scheme != "file" and not parts.hostname:
        return "needs a host, as in smtp://user:pass@mail.example.org:587"
    return None


def _http_url(value: Any) -> str | None:
    problem = _url_problem(value)
    if problem:
        return problem
    if urlsplit(value).scheme not in {"http", "https"} or not urlsplit(value).hostname:
        return "must be an http:// or https:// URL"
    return None


def _log_format(value: Any) -> str | None:
    return None if value in {"auto", "json", "text"} else "must be auto, json or text"


def _feed_files(value: Any) -> str | None:
    return None if value in {"auto", "all", "public"} else "must be auto, all or public"


def _token(value: Any) -> str | None:
    if value and len(str(value)) < 16:
        return "must be empty or at least 16 characters (try: openssl rand -hex 24)"
    return None


DEFAULT_SCHEDULE = "0 7 * * *"


def _schedule(value: Any) -> str | None:
    if value == DEFAULT_SCHEDULE:  # known good: checking it would load APScheduler every time
        return None
    from digest.cron import schedule_problem  # APScheduler's parser, only for a schedule given

    return schedule_problem(value)


def _shared_store(url: str) -> bool:
    """A PostgreSQL URL: a store several hosts may share (SQLite's is one machine's file)."""
    return url.startswith("postgres")


def _database(value: Any) -> str | None:
    if not value:
        return None
    from digest.store.engine import url_problem  # SQLAlchemy, only for a URL given

    return url_problem(value)


# Special-use names a From line may still carry: a mail catcher on this machine takes them.
_LOCAL_MAIL_DOMAINS = frozenset({"localhost", "localdomain", "local", "test"})


def _mail_from(value: Any) -> str | None:
    """An address the message builder and every SMTP server take, with or without a name."""
    if any(char in value for char in "\r\n\0"):
        return "must be one line"
    found = getaddresses([value])
    if len(found) != 1 or "@" not in found[0][1]:
        return "is not an email address (write digest@example.org or 'Paper Digest <digest@example.org>')"
    local, _, domain = found[0][1].rpartition("@")
    checked = f"{local}@example.org" if domain.lower() in _LOCAL_MAIL_DOMAINS else found[0][1]
    return _address_fault(checked, globally_deliverable=False)


def _address_fault(address: str, *, globally_deliverable: bool = True) -> str | None:
    """What keeps ``address`` from being one digest can send to or from, or None."""
    try:
        result = validate_email(
            address, check_deliverability=False, globally_deliverable=globally_deliverable
        )
    except EmailNotValidError as exc:
        return f"is not a valid email address: {exc}"
    if result.ascii_email is None:
        return "needs ASCII before the @ (digest does not send SMTPUTF8 mail)"
    return None


MIN_SECRET_KEY = 32


def _secret_key(value: Any) -> str | None:
    # It signs every unsubscribe, manage and feed link: a short key can be found by trying
    # keys offline against one link a reader forwards. 32 characters, as `digest init` makes.
    if value and len(value) < MIN_SECRET_KEY:
        return (
            f"must be at least {MIN_SECRET_KEY} characters (it signs every link; make one with"
            " `python -c 'import secrets; print(secrets.token_hex(32))'`, or leave it empty to"
            " have one generated)"
        )
    return None


def _one_line(value: Any) -> str | None:
    if not value.strip():
        return "must not be empty"
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return "must be one line without control characters"
    return None


def _path(value: Any) -> str | None:
    return "must not contain a NUL character" if "\0" in str(value) else None


def _host(value: Any) -> str | None:
    """An address to bind to: an IP address or a host name (no scheme, no port)."""
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if value and all(_HOST_LABEL.fullmatch(label) for label in labels):
        return None
    return "must be an address or a host name, such as 127.0.0.1, :: or localhost (no port)"


_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _proxies(value: Any) -> str | None:
    """The proxies uvicorn trusts: addresses or networks; it does not look names up."""
    for item in (part.strip() for part in value.split(",")):
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item) if "/" in item else ipaddress.ip_address(item)
        except ValueError:
            return f"must be addresses or networks separated by commas (or *); {item!r} is neither"
    return None


def _sources(value: Any) -> str | None:
    for source in value:
        if "://" not in source:
            if not source.strip() or "\0" in source:
                return "must be http(s):// or file:// URLs or paths, none empty"
            continue
        problem = _url_problem(source)
        if problem or urlsplit(source).scheme not in {"http", "https", "file"}:
            return f"must be http://, https:// or file:// URLs or paths; {source!r} is not"
    return None


def _subscriber_email(value: Any) -> str | None:
    return _address_fault(value.strip())


def _interests(value: Any) -> str | None:
    from digest.rank.query import InterestError, parse_kept  # only for [[subscribers]]

    for text in value:
        try:
            parse_kept(text)
        except InterestError as exc:
            return f"holds a bad interest: {exc}"
    return None


@dataclass(frozen=True)
class Rule:
    """What a setting's type and bounds do not say (``Annotated`` metadata): a secret, a check."""

    secret: bool = False
    check: Callable[[Any], str | None] | None = None


def _in(low: float, high: float) -> Any:
    """Both bounds inclusive: a typo of a few digits must not ask for 3 GB of memory."""
    return Field(ge=low, le=high)


# Paths and URLs that may be relative: taken from the settings file's folder when written
# there (the file source makes them absolute), from the working directory otherwise.
def _folder(raw: str, base: Path) -> str:
    return str((base / Path(raw).expanduser()).resolve()) if raw else raw


def _sqlite_url(raw: str, base: Path) -> str:
    relative = raw.removeprefix("sqlite:///")
    if relative == raw or raw.startswith("sqlite:////") or relative in {"", ":memory:"}:
        return raw
    return f"sqlite:///{(base / relative).resolve().as_posix()}"


def _file_url(raw: str, base: Path) -> str:
    if not raw.startswith("file://"):
        return raw
    return "file://" + (base / (urlsplit(raw).path or "outbox")).resolve().as_posix()


def _paths(raw: list[str], base: Path) -> list[str]:
    return [item if "://" in item or not item.strip() else _folder(item, base) for item in raw]


_RELATIVE: dict[str, Callable[[Any, Path], Any]] = {
    "data_dir": _folder,
    "database_url": _sqlite_url,
    "inbox": _folder,
    "feeds_dir": _folder,
    "mail_transport": _file_url,
    "sources": _paths,
}


def _absolute(name: str, raw: Any, base: Path) -> Any:
    """``raw`` made absolute from ``base``; a value of the wrong kind is left to validation."""
    clean = isinstance(raw, str) or (isinstance(raw, list) and all(isinstance(v, str) for v in raw))
    if name not in _RELATIVE or not clean or "\0" in str(raw):
        return raw
    try:
        return _RELATIVE[name](raw, base)
    except ValueError:  # an unreadable URL: its check says so
        return raw


def _written(text: str) -> Any:
    """A folder's default as the file writes it (empty: its place under ``data_dir``)."""
    return text


@dataclass(frozen=True)
class _Where:
    """Where ``load_settings`` reads from: the file, the variables and the working folder."""

    config_path: Path | None
    environ: Mapping[str, str]
    cwd: Path


_WHERE: ContextVar[_Where | None] = ContextVar("digest_settings_where", default=None)


def _where() -> _Where:
    return _WHERE.get() or _Where(None, os.environ, Path.cwd())


class _TomlFile(TomlConfigSettingsSource):
    """The settings file: its ``[[subscribers]]`` tables checked and split off, its relative
    paths made absolute from its folder, an unknown key refused."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        assert isinstance(file_path, Path)
        try:
            data = tomllib.loads(file_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {file_path.name}: {exc}") from None
        samples = _sample_subscribers(data.pop("subscribers", []), file_path.name)
        unknown = [key for key in data if key not in _BY_NAME]
        if unknown:
            raise ConfigError(f"config file {file_path.name}: unknown setting {unknown[0]!r}")
        values = {name: _absolute(name, raw, file_path.parent) for name, raw in data.items()}
        return {**values, "config_path": file_path, "sample_subscribers": samples}


class _Environment(EnvSettingsSource):
    """``DIGEST_<NAME>`` variables of the environment handed in; a list is written ``a, b``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self.environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {key.lower(): value for key, value in self.environ.items()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name not in _BY_NAME:  # the file's path and tables are no settings
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        return [part.strip() for part in str(value).replace("\n", ",").split(",") if part.strip()]


class Settings(BaseSettings):
    """Every setting: its type, default, bounds and the comment ``digest init`` writes.
    Once read, paths and URLs are absolute; ``config_path`` and ``sample_subscribers``
    come from the file and are no settings of their own."""

    model_config = SettingsConfigDict(
        env_prefix="DIGEST_", extra="forbid", frozen=True, validate_default=True
    )

    data_dir: Annotated[Path, Rule(check=_path)] = Field(
        _written("data"), description="Folder holding the database, inbox, outbox and feeds."
    )
    database_url: Annotated[str, Rule(secret=True, check=_database)] = Field(
        "",
        description="SQLAlchemy URL of the store; empty means the SQLite file <data_dir>/digest.db.",
    )
    inbox: Annotated[Path, Rule(check=_path)] = Field(
        _written(""), description="Folder watched for new listing dumps; empty: <data_dir>/inbox."
    )
    feeds_dir: Annotated[Path, Rule(check=_path)] = Field(
        _written(""),
        description="Folder the RSS/Atom feeds are written to; empty: <data_dir>/feeds.",
    )
    mail_transport: Annotated[str, Rule(secret=True, check=_transport)] = Field(
        "",
        description="Where emails go: file://DIR, smtp://user:pass@host:587 (STARTTLS) or smtps://...:465."
        " Empty: .eml files in <data_dir>/outbox.",
    )
    mail_from: Annotated[str, Rule(check=_mail_from)] = Field(
        "digest <digest@localhost>", description="From address of the digests."
    )
    smtp_connections: Annotated[int, _in(1, 64)] = Field(
        4, description="SMTP connections used at once."
    )
    smtp_rate: Annotated[float, _in(0, 10_000)] = Field(
        0.0,
        description="Most messages per second sent over SMTP (0: no limit), by every sender"
        " of the store together (runs, workers on every host, confirmation emails).",
    )
    smtp_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="Seconds to wait for the SMTP server."
    )
    smtp_retries: Annotated[int, _in(0, 20)] = Field(
        3, description="Tries more after a 4xx or a dropped connection."
    )
    base_url: Annotated[str, Rule(check=_http_url)] = Field(
        "http://localhost:8000",
        description="Public URL of this installation (unsubscribe links, feed links).",
    )
    site_name: Annotated[str, Rule(check=_one_line)] = Field(
        "digest", description="Name shown in emails and feeds."
    )
    timezone: Annotated[str, Rule(check=_timezone)] = Field(
        "UTC", description="Time zone of the daily period and the schedule."
    )
    secret_key: Annotated[str, Rule(secret=True, check=_secret_key)] = Field(
        "",
        description="Key that signs unsubscribe and private-feed links (32 characters or more);"
        " empty: the site's own, made once and kept in the database (see digest keys).",
    )
    feed_items: Annotated[int, _in(1, 10_000)] = Field(100, description="Items kept in each feed.")
    news_days: Annotated[int, _in(1, 3650)] = Field(
        14,
        description="Days a paper is news by its own date: an older paper new to the store (a"
        " back-fill) is searchable but never mailed as new.",
    )
    schedule: Annotated[str, Rule(check=_schedule)] = Field(
        DEFAULT_SCHEDULE,
        description="When `digest serve` runs the digest, and `digest worker` plans it"
        " (cron syntax).",
    )
    poll_minutes: Annotated[int, _in(1, 24 * 60)] = Field(
        10, description="Minutes between polls of the inbox and sources."
    )
    sources: Annotated[list[str], Rule(check=_sources)] = Field(
        [],
        description="Listing URLs fetched into the inbox (HF daily-papers JSON, arXiv RSS/Atom,"
        " text dumps).",
    )
    fetch_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0,
        description="Seconds the whole fetch may take: sources are fetched at the same time"
        " (8 at once), retries and slow servers included.",
    )
    fetch_max_bytes: Annotated[int, _in(1, 100_000_000_000)] = Field(
        50_000_000, description="Largest body accepted from a source."
    )
    log_format: Annotated[str, Rule(check=_log_format)] = Field(
        "auto", description="auto (JSON when not on a terminal), json or text."
    )
    feed_files: Annotated[str, Rule(check=_feed_files)] = Field(
        "auto",
        description="Feed files a run writes: all (public and one private feed per subscriber),"
        " public (the web front serves the private ones live), or auto (public under"
        " `digest serve` and on a PostgreSQL store, all otherwise); all is refused on a"
        " PostgreSQL store.",
    )
    web_host: Annotated[str, Rule(check=_host)] = Field(
        "127.0.0.1", description="Address the web front listens on."
    )
    web_port: Annotated[int, _in(1, 65_535)] = Field(
        8000, description="Port the web front listens on."
    )
    web_workers: Annotated[int, _in(1, 64)] = Field(
        1, description="Web worker processes of `digest web` (`digest serve` runs one)."
    )
    web_header_timeout: Annotated[float, Field(gt=0, le=300)] = Field(
        10.0,
        description="Seconds a client of the web front has to send a request's headers,"
        " from connecting or from its first byte; then the connection is closed.",
    )
    forwarded_allow_ips: Annotated[str, Rule(check=_proxies)] = Field(
        "127.0.0.1",
        description="Proxies whose X-Forwarded-For/-Proto headers are trusted (comma-separated"
        " addresses, or * for any).",
    )
    confirm_hours: Annotated[float, _in(0.1, 24 * 30)] = Field(
        48.0, description="Hours a subscription's confirmation link stays valid."
    )
    max_pending_hours: Annotated[float, _in(1, 24 * 30)] = Field(
        24.0,
        description="Hours a digest may wait to be sent before /healthz answers 503 and"
        " `digest status` warns.",
    )
    metrics_token: Annotated[str, Rule(secret=True, check=_token)] = Field(
        "",
        description="Bearer token that lets a client other than loopback read /metrics;"
        " empty: loopback only.",
    )
    config_path: Path | None = Field(None, exclude=True)
    # [[subscribers]] tables of the settings file: added by `run` when missing (demos, small sites)
    sample_subscribers: tuple[SubscriptionPatch, ...] = Field((), exclude=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_flag(cls, value: Any, info: ValidationInfo) -> Any:
        # TOML's true is no number, though Python counts it as 1
        kind = _BY_NAME[info.field_name].kind if info.field_name in _BY_NAME else None
        if isinstance(value, bool) and kind in {int, float}:
            raise ValueError("must be a whole number" if kind is int else "must be a number")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> Any:
        option = _BY_NAME.get(str(info.field_name))
        if option is None:
            return value
        problem = option.check(value) if option.check is not None else None
        if problem:
            raise ValueError(problem)
        if isinstance(value, Path):
            return Path(_absolute(option.name, str(value), _where().cwd))
        return _absolute(option.name, value, _where().cwd)

    @field_validator("inbox", "feeds_dir", "database_url", "mail_transport", mode="wrap")
    @classmethod
    def _under_data(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        """An empty folder or URL: its place under ``data_dir``."""
        if value != "" or "data_dir" not in info.data:  # a bad data_dir has been named already
            return handler(value)
        data_dir: Path = info.data["data_dir"]
        return {
            "inbox": data_dir / "inbox",
            "feeds_dir": data_dir / "feeds",
            "database_url": f"sqlite:///{(data_dir / 'digest.db').as_posix()}",
            "mail_transport": "file://" + (data_dir / "outbox").as_posix(),
        }[str(info.field_name)]

    @field_validator("base_url")
    @classmethod
    def _no_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("feed_files")
    @classmethod
    def _no_private_files_on_a_shared_store(cls, value: str, info: ValidationInfo) -> str:
        """Hosts sharing a PostgreSQL store write no private feed files: each host would
        write its own copy, in step with what that host's runs sent and deleted, and a
        reader's feed would depend on which host answered. The web front serves them live."""
        if value == "all" and _shared_store(str(info.data.get("database_url", ""))):
            raise ValueError(
                "must be public or auto with a PostgreSQL store: several hosts may share it,"
                " and each would write private feed files of its own; the web front"
                " (`digest web`) serves the private feeds live from the store"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        where = _where()
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        sources.append(_Environment(settings_cls, where.environ))
        if where.config_path is not None:
            sources.append(_TomlFile(settings_cls, where.config_path))
        return tuple(sources)

    @property
    def outbox(self) -> Path:
        """Where file:// transports and nothing else write by default."""
        return self.data_dir / "outbox"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "digest.lock"

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def shared_store(self) -> bool:
        """The store is PostgreSQL: several hosts may share it."""
        return _shared_store(self.database_url)

    @property
    def private_feed_files(self) -> bool:
        """Whether a run writes each reader's private feed as a file: ``feed_files`` all,
        or auto on an SQLite store (``digest serve`` with the web front settles auto as
        public itself). On a PostgreSQL store only the planner's public feed is a file."""
        return self.feed_files == "all" or (self.feed_files == "auto" and not self.shared_store)

    def folders(self) -> list[Path]:
        """Every folder digest writes to."""
        folders = [self.data_dir, self.inbox, self.feeds_dir]
        if self.mail_transport.startswith("file://"):
            folders.append(Path(urlsplit(self.mail_transport).path))
        return folders


def _option(name: str, info: FieldInfo) -> Option:
    rule = next((item for item in info.metadata if isinstance(item, Rule)), Rule())
    bounds = {type(item).__name__: item for item in info.metadata}
    kind = get_origin(info.annotation) or info.annotation
    assert isinstance(kind, type)
    return Option(
        name,
        str if kind is Path else kind,
        info.default,
        info.description or "",
        secret=rule.secret,
        check=rule.check,
        low=getattr(bounds.get("Ge"), "ge", None),
        high=getattr(bounds.get("Le"), "le", None),
        above=getattr(bounds.get("Gt"), "gt", None),
    )


_NOT_OPTIONS = frozenset({"config_path", "sample_subscribers"})
_BY_NAME: dict[str, Option] = {
    name: _option(name, info)
    for name, info in Settings.model_fields.items()
    if name not in _NOT_OPTIONS
}
OPTIONS: tuple[Option, ...] = tuple(_BY_NAME.values())


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


_LIST = 'must be a list of strings, as in ["a", "b"]'
_REASONS = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "path_type": "must be a string",
    "list_type": _LIST,
}


def reason(option: Option, error: ErrorDetails) -> str:
    """What pydantic found wrong with a value, said the way every message of digest says it
    (never holding the value, which may be a secret)."""
    kind = error["type"]
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if len(error["loc"]) > 1:  # an item of a list
        return _LIST
    if kind in {"greater_than_equal", "less_than_equal"}:
        low, high = option.low, option.high
        if low is not None and high is not None:
            return f"must be from {_number(low)} to {_number(high)}"
        return (
            f"must be at least {_number(low)}"
            if low is not None
            else f"must be at most {_number(high or 0)}"
        )
    if kind == "greater_than":
        return f"must be greater than {_number(option.above or 0)}"
    return _REASONS.get(kind, error["msg"])


def _shown(option: Option, value: Any) -> str:
    if option.secret:
        return ""
    text = repr(value)
    return f" ({text if len(text) <= 40 else text[:39] + '…'})"


# The keys of a [[subscribers]] table: a subscriber's fields, but its status (it is added active).
SAMPLE_KEYS = tuple(name for name in CHOICES if name != "status")


def _sample_fault(name: str, item: dict[str, Any], where: str, reason: str) -> str:
    shown = repr(item[name])
    shown = shown if len(shown) <= 40 else shown[:39] + "…"
    return f"setting {name} ({shown}) from {where} {reason}"


def _sample_subscribers(samples: Any, file_name: str) -> tuple[SubscriptionPatch, ...]:
    """The ``[[subscribers]]`` tables of the settings file, each checked by the one
    declaration of a subscriber's fields."""
    if not isinstance(samples, list) or not all(isinstance(item, dict) for item in samples):
        raise ConfigError(f"config file {file_name}: subscribers must be [[subscribers]] tables")
    checked = []
    for number, item in enumerate(samples, 1):
        where = f"{file_name}, [[subscribers]] table {number}"
        if "email" not in item:
            raise ConfigError(f"config file {where}: needs an email")
        unknown = [key for key in item if key not in SAMPLE_KEYS]
        if unknown:
            raise ConfigError(
                f"config file {where}: unknown key {unknown[0]!r} (known: {', '.join(SAMPLE_KEYS)})"
            )
        try:
            patch = SubscriptionPatch(**item)
        except FieldError as exc:
            raise ConfigError(_sample_fault(exc.name, item, where, exc.reason)) from None
        # what needs more than the field's own type: a deliverable address, interests that parse
        for name, check in (("email", _subscriber_email), ("interests", _interests)):
            fault = check(item[name]) if name in item else None
            if fault is not None:
                raise ConfigError(_sample_fault(name, item, where, fault))
        checked.append(patch)
    return tuple(checked)


def _config_path(
    config: str | os.PathLike[str] | None, env: Mapping[str, str], cwd: Path
) -> Path | None:
    """The settings file: ``config``, else ``DIGEST_CONFIG``, else ``./digest.toml`` if present."""
    if config is None and env.get("DIGEST_CONFIG"):
        config = env["DIGEST_CONFIG"]
    if config is not None:
        path = (cwd / Path(config)).resolve()
        if not path.is_file():
            raise ConfigError(f"config file {config} not found")
        return path
    default = cwd / DEFAULT_CONFIG_NAME
    return default.resolve() if default.is_file() else None


def _env_name(name: str) -> str:
    return f"DIGEST_{name.upper()}"


def _made(where: _Where) -> Settings:
    """The settings read from ``where``, or a ConfigError naming the first bad setting and
    where it came from; a secret is never echoed."""
    token = _WHERE.set(where)
    try:
        return Settings()  # type: ignore[call-arg]  # the sources give every value
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0])
        option = _BY_NAME[name]
        origin = _env_name(name)
        if origin not in where.environ and where.config_path is not None:
            origin = where.config_path.name
        shown = _shown(option, error["input"])
        raise ConfigError(f"setting {name}{shown} from {origin} {reason(option, error)}") from None
    finally:
        _WHERE.reset(token)


def load_settings(
    config: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Read the settings file and ``DIGEST_*`` variables, validate, resolve paths."""
    env = dict(os.environ if environ is None else environ)
    cwd = Path.cwd() if cwd is None else cwd
    config_path = _config_path(config, env, cwd)
    if config_path is not None and any(_env_name(name) in env for name in _BY_NAME):
        _made(_Where(config_path, {}, cwd))  # a bad value in the file is refused, even hidden
    return _made(_Where(config_path, env, cwd))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _bounds_text(option: Option) -> str:
    if option.low is not None and option.high is not None:
        return f" ({_number(option.low)} to {_number(option.high)})"
    if option.high is not None:
        return f" (at most {_number(option.high)})"
    return ""


def default_config_text() -> str:
    """The commented ``digest.toml`` that ``digest init`` writes: every option, commented out."""
    lines = [
        "# digest settings. Every line is optional; the value shown is the default.",
        "# Each setting can also be given as an environment variable DIGEST_<NAME>,",
        "# which wins over this file (for example DIGEST_MAIL_TRANSPORT).",
        "",
    ]
    for option in OPTIONS:
        lines.append(f"# {option.help}{_bounds_text(option)}")
        lines.append(f"# {option.name} = {_toml_value(option.default)}")
        lines.append("")
    return "\n".join(lines)


def link_warnings(settings: Settings) -> list[str]:
    """What makes the links in emails sent over SMTP fail: a local or plain-http ``base_url``.

    The file:// transport (the demo, a mail catcher) gets none: nobody clicks those links.
    """
    if not settings.mail_transport.startswith(("smtp://", "smtps://")):
        return []
    parts = urlsplit(settings.base_url)
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
        local = address.is_loopback or address.is_unspecified
    except ValueError:
        local = host == "localhost" or host.endswith(".localhost")
    if local:
        return [
            f"base_url {settings.base_url} points at this machine: the unsubscribe and feed"
            " links in every email sent over SMTP are dead; set base_url to the public address"
        ]
    if parts.scheme == "http":
        return [
            f"base_url {settings.base_url} is plain http: mail clients offer one-click"
            " unsubscribe (RFC 8058) only for https links; set base_url to an https:// address"
        ]
    return []
