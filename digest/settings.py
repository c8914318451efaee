"""Settings: one model of options, read once, validated at start.

Sources, later ones winning: the defaults below, the TOML file (``--config``,
``DIGEST_CONFIG`` or ``./digest.toml`` when present), then ``DIGEST_<NAME>``
environment variables. Relative paths in the file are taken relative to the
file's folder; relative paths elsewhere to the working directory.

``SettingsModel`` declares every option (type, default, bounds, help); ``OPTIONS`` (the
table the docs and ``digest init`` are written from) is derived from it.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from digest.errors import ConfigError

DEFAULT_CONFIG_NAME = "digest.toml"


@dataclass(frozen=True)
class Option:
    """One setting: its name, type, default and the comment written by ``digest init``."""

    name: str
    kind: type
    default: Any
    help: str
    secret: bool = False
    check: Callable[[Any], str | None] | None = None
    # Bounds of a number, both inclusive: a typo of a few digits must not ask for 3 GB of memory.
    low: float | None = None
    high: float | None = None


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _frequency(value: Any) -> str | None:
    return None if value in {"daily", "weekly"} else "must be daily or weekly"


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


def _schedule(value: Any) -> str | None:
    if len(str(value).split()) != 5:
        return "must be a cron expression of five fields, such as '0 7 * * *'"
    return None


@dataclass(frozen=True)
class Rule:
    """What a setting's type does not say: a secret, bounds, a check (``Annotated`` metadata)."""

    secret: bool = False
    check: Callable[[Any], str | None] | None = None
    low: float | None = None
    high: float | None = None


class _Text(str):
    """A value that came as text (an environment variable): a list may be written ``a, b``."""

    __slots__ = ()


def _checked(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    assert info.field_name is not None
    option = _options_of(cls)[info.field_name]
    value = convert(option, value, text=isinstance(value, _Text))
    return str(value) if isinstance(value, _Text) else value


class SettingsModel(BaseSettings):
    """Every setting: its type, default, bounds and the comment ``digest init`` writes."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=False)

    data_dir: str = Field(
        "data", description="Folder holding the database, inbox, outbox and feeds."
    )
    database_url: Annotated[str, Rule(secret=True)] = Field(
        "",
        description="SQLAlchemy URL of the store; empty means the SQLite file <data_dir>/digest.db.",
    )
    inbox: str = Field(
        "", description="Folder watched for new listing dumps; empty: <data_dir>/inbox."
    )
    feeds_dir: str = Field(
        "", description="Folder the RSS/Atom feeds are written to; empty: <data_dir>/feeds."
    )
    mail_transport: Annotated[str, Rule(secret=True, check=_transport)] = Field(
        "",
        description="Where emails go: file://DIR, smtp://user:pass@host:587 (STARTTLS) or smtps://...:465."
        " Empty: .eml files in <data_dir>/outbox.",
    )
    mail_from: str = Field("digest <digest@localhost>", description="From address of the digests.")
    smtp_connections: Annotated[int, Rule(low=1, high=64)] = Field(
        4, description="SMTP connections used at once."
    )
    smtp_rate: Annotated[float, Rule(low=0, high=10_000)] = Field(
        0.0, description="Most messages per second sent over SMTP (0: no limit)."
    )
    smtp_timeout: Annotated[float, Rule(check=_positive, high=3600)] = Field(
        30.0, description="Seconds to wait for the SMTP server."
    )
    smtp_retries: Annotated[int, Rule(low=0, high=20)] = Field(
        3, description="Tries more after a 4xx or a dropped connection."
    )
    base_url: Annotated[str, Rule(check=_http_url)] = Field(
        "http://localhost:8000",
        description="Public URL of this installation (unsubscribe links, feed links).",
    )
    site_name: str = Field("digest", description="Name shown in emails and feeds.")
    timezone: Annotated[str, Rule(check=_timezone)] = Field(
        "UTC", description="Time zone of the daily period and the schedule."
    )
    secret_key: Annotated[str, Rule(secret=True)] = Field(
        "",
        description="Key that signs unsubscribe and private-feed links; empty: the site's own,"
        " made once and kept in the database (see digest keys).",
    )
    feed_items: Annotated[int, Rule(low=1, high=10_000)] = Field(
        100, description="Items kept in each feed."
    )
    news_days: Annotated[int, Rule(low=1, high=3650)] = Field(
        14,
        description="Days a paper is news by its own date: an older paper new to the store (a"
        " back-fill) is searchable but never mailed as new.",
    )
    schedule: Annotated[str, Rule(check=_schedule)] = Field(
        "0 7 * * *", description="When `digest serve` runs the digest (cron syntax)."
    )
    poll_minutes: Annotated[int, Rule(low=1, high=24 * 60)] = Field(
        10, description="Minutes between polls of the inbox and sources."
    )
    sources: list[str] = Field(
        [],
        description="Listing URLs fetched into the inbox (HF daily-papers JSON, arXiv RSS/Atom,"
        " text dumps).",
    )
    fetch_timeout: Annotated[float, Rule(check=_positive, high=3600)] = Field(
        30.0,
        description="Seconds the whole fetch may take: sources are fetched at the same time"
        " (8 at once), retries and slow servers included.",
    )
    fetch_max_bytes: Annotated[int, Rule(low=1, high=100_000_000_000)] = Field(
        50_000_000, description="Largest body accepted from a source."
    )
    log_format: Annotated[str, Rule(check=_log_format)] = Field(
        "auto", description="auto (JSON when not on a terminal), json or text."
    )
    feed_files: Annotated[str, Rule(check=_feed_files)] = Field(
        "auto",
        description="Feed files a run writes: all (public and one private feed per subscriber),"
        " public (the web front serves the private ones live), or auto (public under"
        " `digest serve`, all otherwise).",
    )
    web_host: str = Field("127.0.0.1", description="Address the web front listens on.")
    web_port: Annotated[int, Rule(low=1, high=65_535)] = Field(
        8000, description="Port the web front listens on."
    )
    web_workers: Annotated[int, Rule(low=1, high=64)] = Field(
        1, description="Web worker processes of `digest web` (`digest serve` runs one)."
    )
    web_header_timeout: Annotated[float, Rule(check=_positive, high=300)] = Field(
        10.0,
        description="Seconds a client of the web front has to send a request's headers,"
        " from connecting or from its first byte; then the connection is closed.",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies whose X-Forwarded-For/-Proto headers are trusted (comma-separated"
        " addresses, or * for any).",
    )
    confirm_hours: Annotated[float, Rule(low=0.1, high=24 * 30)] = Field(
        48.0, description="Hours a subscription's confirmation link stays valid."
    )
    max_pending_hours: Annotated[float, Rule(low=1, high=24 * 30)] = Field(
        24.0,
        description="Hours a digest may wait to be sent before /healthz answers 503 and"
        " `digest status` warns.",
    )
    metrics_token: Annotated[str, Rule(secret=True, check=_token)] = Field(
        "",
        description="Bearer token that lets a client other than loopback read /metrics;"
        " empty: loopback only.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> Any:
        return _checked(cls, value, info)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings gives the layers, the file and then DIGEST_* on top, as init values:
        # it reads the environment it is handed (tests hand their own), not os.environ
        return (init_settings,)


class SubscriberTable(BaseModel):
    """The keys of a ``[[subscribers]]`` table in the settings file; their bounds are also
    those of ``digest subscribe`` and of a CSV import."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field("", description="The subscriber's address.")
    interests: list[str] = Field([], description="Interest expressions, one string each.")
    max_items: Annotated[int, Rule(low=1, high=1000)] = Field(
        20, description="Most papers per digest."
    )
    min_score: Annotated[float, Rule(low=0, high=10_000)] = Field(
        0.0, description="Least score a paper needs."
    )
    frequency: Annotated[str, Rule(check=_frequency)] = Field(
        "daily", description="daily or weekly."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> Any:
        return _checked(cls, value, info)


def _option(name: str, info: FieldInfo) -> Option:
    rule = next((item for item in info.metadata if isinstance(item, Rule)), Rule())
    kind = get_origin(info.annotation) or info.annotation
    assert isinstance(kind, type)
    return Option(
        name,
        kind,
        info.default,
        info.description or "",
        secret=rule.secret,
        check=rule.check,
        low=rule.low,
        high=rule.high,
    )


@functools.cache
def _options_of(model: type[BaseModel]) -> dict[str, Option]:
    return {name: _option(name, info) for name, info in model.model_fields.items()}


OPTIONS: tuple[Option, ...] = tuple(_options_of(SettingsModel).values())
SUBSCRIBER = _options_of(SubscriberTable)
_BY_NAME = _options_of(SettingsModel)
_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(frozen=True)
class Settings:
    """The validated settings; paths are resolved."""

    data_dir: Path
    database_url: str
    inbox: Path
    feeds_dir: Path
    mail_transport: str
    mail_from: str
    smtp_connections: int
    smtp_rate: float
    smtp_timeout: float
    smtp_retries: int
    base_url: str
    site_name: str
    timezone: str
    secret_key: str
    feed_items: int
    news_days: int
    schedule: str
    poll_minutes: int
    sources: list[str]
    fetch_timeout: float
    fetch_max_bytes: int
    log_format: str
    feed_files: str
    web_host: str
    web_port: int
    web_workers: int
    web_header_timeout: float
    forwarded_allow_ips: str
    confirm_hours: float
    max_pending_hours: float
    metrics_token: str
    config_path: Path | None = field(default=None)
    # [[subscribers]] tables of the settings file: added by `run` when missing (demos, small sites)
    sample_subscribers: tuple[dict[str, Any], ...] = ()

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

    def folders(self) -> list[Path]:
        """Every folder digest writes to."""
        folders = [self.data_dir, self.inbox, self.feeds_dir]
        if self.mail_transport.startswith("file://"):
            folders.append(Path(urlsplit(self.mail_transport).path))
        return folders


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def convert(option: Option, value: Any, *, text: bool = False) -> Any:
    """``value`` as the option's type, within its bounds; else a ValueError saying what is wrong.

    ``text``: the value came as text (an environment variable, an argument, a CSV cell), so
    a list may be written ``a, b``; in TOML a list must be a list. The message never holds
    the value, which may be a secret.
    """
    kind = option.kind
    if kind is list:
        if text and isinstance(value, str):
            value = [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError('must be a list of strings, as in ["a", "b"]')
        return value
    if kind is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError("must be true or false")
            return lowered in {"1", "true", "yes", "on"}
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
    elif kind is int:
        if isinstance(value, str):
            value = value.strip().replace("_", "")
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be a whole number")
        try:
            value = int(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError("must be a whole number") from None
    elif kind is float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
    low, high = option.low, option.high
    if low is not None and high is not None and not low <= value <= high:
        raise ValueError(f"must be from {_number(low)} to {_number(high)}")
    if low is not None and value < low:
        raise ValueError(f"must be at least {_number(low)}")
    if high is not None and value > high:
        raise ValueError(f"must be at most {_number(high)}")
    problem = option.check(value) if option.check is not None else None
    if problem:
        raise ValueError(problem)
    return value


def _shown(option: Option, value: Any) -> str:
    if option.secret:
        return ""
    text = repr(value)
    return f" ({text if len(text) <= 40 else text[:39] + '…'})"


def _sample_subscribers(samples: Any, file_name: str) -> tuple[dict[str, Any], ...]:
    """The ``[[subscribers]]`` tables of the settings file, checked key by key."""
    if not isinstance(samples, list) or not all(isinstance(item, dict) for item in samples):
        raise ConfigError(f"config file {file_name}: subscribers must be [[subscribers]] tables")
    checked = []
    for number, item in enumerate(samples, 1):
        where = f"{file_name}, [[subscribers]] table {number}"
        if "email" not in item:
            raise ConfigError(f"config file {where}: needs an email")
        table = _model(
            SubscriberTable,
            item,
            origin=functools.partial(_always, where),
            unknown=functools.partial(_unknown_key, where),
        )
        checked.append({key: getattr(table, key) for key in item})
    return tuple(checked)


def _always(where: str, _name: str) -> str:
    return where


def _unknown_key(where: str, key: str) -> str:
    return f"config file {where}: unknown key {key!r} (known: {', '.join(SUBSCRIBER)})"


def _model(
    cls: type[_Model],
    values: Mapping[str, Any],
    *,
    origin: Callable[[str], str],
    unknown: Callable[[str], str],
) -> _Model:
    """``cls`` made of ``values``, or a ConfigError about the first bad key in their order:
    it names the setting and where it came from, and never echoes a secret."""
    options = _options_of(cls)
    problems: dict[str, Any] = {}
    try:
        made = cls(**{name: value for name, value in values.items() if name in options})
    except ValidationError as exc:
        problems = {str(problem["loc"][0]): problem for problem in exc.errors()}
    for name, value in values.items():
        if name not in options:
            raise ConfigError(unknown(name))
        if name in problems:
            cause = problems[name].get("ctx", {}).get("error", problems[name]["msg"])
            shown = _shown(options[name], value)
            raise ConfigError(f"setting {name}{shown} from {origin(name)} {cause}")
    return made


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


def _read_file(path: Path) -> tuple[dict[str, Any], tuple[dict[str, Any], ...]]:
    """The settings of the file (not checked yet) and its subscriber tables (checked)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path.name}: {exc}") from None
    return data, _sample_subscribers(data.pop("subscribers", []), path.name)


def _resolved_path(raw: str, base: Path) -> Path:
    return (base / Path(raw).expanduser()).resolve()


def _database_url(raw: str, base: Path, data_dir: Path) -> str:
    url = raw or f"sqlite:///{(data_dir / 'digest.db').as_posix()}"
    relative = url.removeprefix("sqlite:///")
    if relative == url or url.startswith("sqlite:////") or relative in {"", ":memory:"}:
        return url
    return f"sqlite:///{(base / relative).resolve().as_posix()}"


def _transport_url(raw: str, base: Path, data_dir: Path) -> str:
    if not raw:
        return "file://" + (data_dir / "outbox").as_posix()
    if not raw.startswith("file://"):
        return raw
    return "file://" + (base / (urlsplit(raw).path or "outbox")).resolve().as_posix()


def _environment(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``DIGEST_<NAME>`` variables present, by setting name."""
    return {name: _Text(env[_env_name(name)]) for name in _BY_NAME if _env_name(name) in env}


def _env_name(name: str) -> str:
    return f"DIGEST_{name.upper()}"


def _validated(values: Mapping[str, Any], origin: Callable[[str], str]) -> SettingsModel:
    return _model(
        SettingsModel,
        values,
        origin=origin,
        unknown=lambda key: f"config file {origin(key)}: unknown setting {key!r}",
    )


def load_settings(
    config: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Read the settings file and ``DIGEST_*`` variables, validate, resolve paths."""
    env = dict(os.environ if environ is None else environ)
    cwd = Path.cwd() if cwd is None else cwd
    config_path = _config_path(config, env, cwd)
    from_file: dict[str, Any] = {}
    samples: tuple[dict[str, Any], ...] = ()
    if config_path is not None:
        from_file, samples = _read_file(config_path)
        _validated(from_file, lambda _: config_path.name)  # a bad value is refused, even hidden
    from_env = _environment(env)
    model = _validated({**from_file, **from_env}, _env_name)

    def base(name: str) -> Path:
        # relative paths in the file are taken from its folder, others from the working dir
        if config_path is not None and name in from_file and name not in from_env:
            return config_path.parent
        return cwd

    return _resolve(model, base, cwd, config_path, samples)


def _resolve(
    model: SettingsModel,
    base: Callable[[str], Path],
    cwd: Path,
    config_path: Path | None,
    sample_subscribers: tuple[dict[str, Any], ...],
) -> Settings:
    """The validated values with every path and URL made absolute."""

    def folder(name: str, fallback: Path) -> Path:
        raw: str = getattr(model, name)
        return _resolved_path(raw, base(name)) if raw else fallback

    data_dir = folder("data_dir", cwd / "data")
    values = model.model_dump()
    values.update(
        data_dir=data_dir,
        database_url=_database_url(model.database_url, base("database_url"), data_dir),
        inbox=folder("inbox", data_dir / "inbox"),
        feeds_dir=folder("feeds_dir", data_dir / "feeds"),
        mail_transport=_transport_url(model.mail_transport, base("mail_transport"), data_dir),
        sources=[
            source if "://" in source else str(_resolved_path(source, base("sources")))
            for source in model.sources
        ],
        base_url=model.base_url.rstrip("/"),
        config_path=config_path,
        sample_subscribers=sample_subscribers,
    )
    return Settings(**values)


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
