"""Settings: one table of options, read once, validated at start.

Sources, later ones winning: the defaults below, the TOML file (``--config``,
``DIGEST_CONFIG`` or ``./digest.toml`` when present), then ``DIGEST_<NAME>``
environment variables. Relative paths in the file are taken relative to the
file's folder; relative paths elsewhere to the working directory.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from digest.errors import ConfigError, WriteError
from digest.files import write_private

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


def _schedule(value: Any) -> str | None:
    if len(str(value).split()) != 5:
        return "must be a cron expression of five fields, such as '0 7 * * *'"
    return None


OPTIONS: tuple[Option, ...] = (
    Option("data_dir", str, "data", "Folder holding the database, inbox, outbox and feeds."),
    Option(
        "database_url",
        str,
        "",
        "SQLAlchemy URL of the store; empty means the SQLite file <data_dir>/digest.db.",
        secret=True,
    ),
    Option("inbox", str, "", "Folder watched for new listing dumps; empty: <data_dir>/inbox."),
    Option(
        "feeds_dir", str, "", "Folder the RSS/Atom feeds are written to; empty: <data_dir>/feeds."
    ),
    Option(
        "mail_transport",
        str,
        "",
        "Where emails go: file://DIR, smtp://user:pass@host:587 (STARTTLS) or smtps://...:465."
        " Empty: .eml files in <data_dir>/outbox.",
        secret=True,
        check=_transport,
    ),
    Option("mail_from", str, "digest <digest@localhost>", "From address of the digests."),
    Option("smtp_connections", int, 4, "SMTP connections used at once.", low=1, high=64),
    Option(
        "smtp_rate",
        float,
        0.0,
        "Most messages per second sent over SMTP (0: no limit).",
        low=0,
        high=10_000,
    ),
    Option(
        "smtp_timeout",
        float,
        30.0,
        "Seconds to wait for the SMTP server.",
        check=_positive,
        high=3600,
    ),
    Option(
        "smtp_retries",
        int,
        3,
        "Tries more after a 4xx or a dropped connection.",
        low=0,
        high=20,
    ),
    Option(
        "base_url",
        str,
        "http://localhost:8000",
        "Public URL of this installation (unsubscribe links, feed links).",
        check=_http_url,
    ),
    Option("site_name", str, "digest", "Name shown in emails and feeds."),
    Option(
        "timezone", str, "UTC", "Time zone of the daily period and the schedule.", check=_timezone
    ),
    Option(
        "secret_key",
        str,
        "",
        "Key that signs unsubscribe and private-feed links; empty: generated once into"
        " <data_dir>/secret.key.",
        secret=True,
    ),
    Option("feed_items", int, 100, "Items kept in each feed.", low=1, high=10_000),
    Option(
        "schedule",
        str,
        "0 7 * * *",
        "When `digest serve` runs the digest (cron syntax).",
        check=_schedule,
    ),
    Option(
        "poll_minutes",
        int,
        10,
        "Minutes between polls of the inbox and sources.",
        low=1,
        high=24 * 60,
    ),
    Option(
        "sources",
        list,
        [],
        "Listing URLs fetched into the inbox (HF daily-papers JSON, arXiv RSS/Atom, text dumps).",
    ),
    Option(
        "fetch_timeout",
        float,
        30.0,
        "Seconds allowed for one source fetch.",
        check=_positive,
        high=3600,
    ),
    Option(
        "fetch_max_bytes",
        int,
        50_000_000,
        "Largest body accepted from a source.",
        low=1,
        high=100_000_000_000,
    ),
    Option(
        "log_format",
        str,
        "auto",
        "auto (JSON when not on a terminal), json or text.",
        check=_log_format,
    ),
)

_BY_NAME = {option.name: option for option in OPTIONS}

# The keys of a [[subscribers]] table in the settings file; their bounds are also those of
# `digest subscribe` and of a CSV import.
SUBSCRIBER_OPTIONS: tuple[Option, ...] = (
    Option("email", str, "", "The subscriber's address."),
    Option("interests", list, [], "Interest expressions, one string each."),
    Option("max_items", int, 20, "Most papers per digest.", low=1, high=1000),
    Option("min_score", float, 0.0, "Least score a paper needs.", low=0, high=10_000),
    Option("frequency", str, "daily", "daily or weekly.", check=_frequency),
)
SUBSCRIBER = {option.name: option for option in SUBSCRIBER_OPTIONS}


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
    schedule: str
    poll_minutes: int
    sources: list[str]
    fetch_timeout: float
    fetch_max_bytes: int
    log_format: str
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

    def signing_key(self) -> bytes:
        """The secret key; generated once into the data folder when not set."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        try:
            return _read_key(path)
        except FileNotFoundError:
            pass
        key = secrets.token_hex(32).encode()
        draft = path.with_name(f".secret.key.{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_private(draft, key + b"\n")
            try:
                # Appears whole or not at all, and never replaces a key another process made.
                os.link(draft, path)
            except FileExistsError:
                return _read_key(path)
            finally:
                draft.unlink(missing_ok=True)
        except OSError as exc:
            raise WriteError(f"cannot write the secret key {path}: {exc.strerror}") from None
        return key


def _read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if not key:
        raise ConfigError(f"the secret key file {path} is empty: remove it to make a new one")
    return key


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


def _setting(option: Option, value: Any, origin: str, *, text: bool) -> Any:
    """``convert``, with a ConfigError naming the setting and where it came from."""
    try:
        return convert(option, value, text=text)
    except ValueError as exc:
        raise ConfigError(
            f"setting {option.name}{_shown(option, value)} from {origin} {exc}"
        ) from None


def _sample_subscribers(samples: Any, file_name: str) -> tuple[dict[str, Any], ...]:
    """The ``[[subscribers]]`` tables of the settings file, checked key by key."""
    if not isinstance(samples, list) or not all(isinstance(item, dict) for item in samples):
        raise ConfigError(f"config file {file_name}: subscribers must be [[subscribers]] tables")
    checked = []
    for number, item in enumerate(samples, 1):
        where = f"{file_name}, [[subscribers]] table {number}"
        if "email" not in item:
            raise ConfigError(f"config file {where}: needs an email")
        for key in item:
            if key not in SUBSCRIBER:
                known = ", ".join(SUBSCRIBER)
                raise ConfigError(f"config file {where}: unknown key {key!r} (known: {known})")
        checked.append(
            {
                key: _setting(SUBSCRIBER[key], value, where, text=False)
                for key, value in item.items()
            }
        )
    return tuple(checked)


def load_settings(
    config: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Read the settings file and ``DIGEST_*`` variables, validate, resolve paths."""
    env = dict(os.environ if environ is None else environ)
    cwd = Path.cwd() if cwd is None else cwd
    config_path: Path | None = None
    if config is None and env.get("DIGEST_CONFIG"):
        config = env["DIGEST_CONFIG"]
    if config is not None:
        config_path = (cwd / Path(config)).resolve()
        if not config_path.is_file():
            raise ConfigError(f"config file {config} not found")
    elif (cwd / DEFAULT_CONFIG_NAME).is_file():
        config_path = (cwd / DEFAULT_CONFIG_NAME).resolve()

    sample_subscribers: tuple[dict[str, Any], ...] = ()
    values: dict[str, Any] = {o.name: o.default for o in OPTIONS}
    base_dirs: dict[str, Path] = {}
    if config_path is not None:
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {config_path.name}: {exc}") from None
        sample_subscribers = _sample_subscribers(data.pop("subscribers", []), config_path.name)
        for key, value in data.items():
            if key not in _BY_NAME:
                raise ConfigError(f"config file {config_path.name}: unknown setting {key!r}")
            values[key] = _setting(_BY_NAME[key], value, config_path.name, text=False)
            base_dirs[key] = config_path.parent
    for option in OPTIONS:
        var = "DIGEST_" + option.name.upper()
        if var in env:
            values[option.name] = _setting(option, env[var], var, text=True)
            base_dirs.pop(option.name, None)

    def path_of(name: str, fallback: Path) -> Path:
        raw = values[name]
        if not raw:
            return fallback
        return (base_dirs.get(name, cwd) / Path(raw).expanduser()).resolve()

    data_dir = path_of("data_dir", cwd / "data")
    transport = values["mail_transport"]
    if transport.startswith("file://"):
        path = urlsplit(transport).path or "outbox"
        full = (base_dirs.get("mail_transport", cwd) / path).resolve()
        transport = "file://" + full.as_posix()
    elif not transport:
        transport = "file://" + (data_dir / "outbox").as_posix()
    database_url = values["database_url"] or f"sqlite:///{(data_dir / 'digest.db').as_posix()}"
    if database_url.startswith("sqlite:///") and not database_url.startswith("sqlite:////"):
        relative = database_url[len("sqlite:///") :]
        if relative and relative != ":memory:":
            full = (base_dirs.get("database_url", cwd) / relative).resolve()
            database_url = f"sqlite:///{full.as_posix()}"
    sources = [
        source
        if "://" in source
        else str((base_dirs.get("sources", cwd) / Path(source).expanduser()).resolve())
        for source in values["sources"]
    ]
    names = {f.name for f in fields(Settings)}
    resolved = {k: v for k, v in values.items() if k in names}
    resolved.update(
        data_dir=data_dir,
        database_url=database_url,
        inbox=path_of("inbox", data_dir / "inbox"),
        feeds_dir=path_of("feeds_dir", data_dir / "feeds"),
        mail_transport=transport,
        sources=sources,
        base_url=values["base_url"].rstrip("/"),
        config_path=config_path,
        sample_subscribers=sample_subscribers,
    )
    return Settings(**resolved)


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
