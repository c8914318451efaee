"""``Settings``: every setting declared once, with its type, default, bounds, check and the
comment ``digest init`` writes; read by its own sources (``sources``: the file, the
environment), validated by pydantic, and used as it is by the rest of digest, with the
paths and flags that follow from it. ``OPTIONS`` is the view of its fields the docs,
``digest init`` and the command's argument checks are written from.
"""

from __future__ import annotations

import ipaddress
import zoneinfo
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, ValidatorFunctionWrapHandler, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from digest.settings import checks
from digest.settings.checks import DEFAULT_SCHEDULE, Rule, within
from digest.settings.options import Option, option_of
from digest.settings.sources import FILE_FIELDS, Environment, TomlFile, absolute, where_now
from digest.store.subscription import SubscriptionPatch


def _written(text: str) -> Any:
    """A folder's default as the file writes it (empty: its place under ``data_dir``)."""
    return text


class Settings(BaseSettings):
    """Every setting: its type, default, bounds and the comment ``digest init`` writes.
    Once read, paths and URLs are absolute; ``config_path`` and ``sample_subscribers``
    come from the file and are no settings of their own."""

    model_config = SettingsConfigDict(
        env_prefix="DIGEST_", extra="forbid", frozen=True, validate_default=True
    )

    data_dir: Annotated[Path, Rule(check=checks.path)] = Field(
        _written("data"), description="Folder holding the database, inbox, outbox and feeds."
    )
    database_url: Annotated[str, Rule(secret=True, check=checks.database)] = Field(
        "",
        description="SQLAlchemy URL of the store; empty means the SQLite file <data_dir>/digest.db.",
    )
    inbox: Annotated[Path, Rule(check=checks.path)] = Field(
        _written(""), description="Folder watched for new listing dumps; empty: <data_dir>/inbox."
    )
    feeds_dir: Annotated[Path, Rule(check=checks.path)] = Field(
        _written(""),
        description="Folder the RSS/Atom feeds are written to; empty: <data_dir>/feeds.",
    )
    mail_transport: Annotated[str, Rule(secret=True, check=checks.transport)] = Field(
        "",
        description="Where emails go: file://DIR, smtp://user:pass@host:587 (STARTTLS) or smtps://...:465."
        " Empty: .eml files in <data_dir>/outbox.",
    )
    mail_from: Annotated[str, Rule(check=checks.mail_from)] = Field(
        "digest <digest@localhost>", description="From address of the digests."
    )
    smtp_connections: Annotated[int, within(1, 64)] = Field(
        4, description="SMTP connections used at once."
    )
    smtp_rate: Annotated[float, within(0, 10_000)] = Field(
        0.0,
        description="Most messages per second sent over SMTP (0: no limit), by every sender"
        " of the store together (runs, workers on every host, confirmation emails).",
    )
    smtp_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="Seconds to wait for the SMTP server."
    )
    smtp_retries: Annotated[int, within(0, 20)] = Field(
        3, description="Tries more after a 4xx or a dropped connection."
    )
    base_url: Annotated[str, Rule(check=checks.http_url)] = Field(
        "http://localhost:8000",
        description="Public URL of this installation (unsubscribe links, feed links).",
    )
    site_name: Annotated[str, Rule(check=checks.one_line)] = Field(
        "digest", description="Name shown in emails and feeds."
    )
    timezone: Annotated[str, Rule(check=checks.timezone)] = Field(
        "UTC", description="Time zone of the daily period and the schedule."
    )
    secret_key: Annotated[str, Rule(secret=True, check=checks.secret_key)] = Field(
        "",
        description="Key that signs unsubscribe and private-feed links (32 characters or more);"
        " empty: the site's own, made once and kept in the database (see digest keys).",
    )
    feed_items: Annotated[int, within(1, 10_000)] = Field(
        100, description="Items kept in each feed."
    )
    news_days: Annotated[int, within(1, 3650)] = Field(
        14,
        description="Days a paper is news by its own date: an older paper new to the store (a"
        " back-fill) is searchable but never mailed as new.",
    )
    schedule: Annotated[str, Rule(check=checks.schedule)] = Field(
        DEFAULT_SCHEDULE,
        description="When `digest serve` runs the digest, and `digest worker` plans it"
        " (cron syntax).",
    )
    poll_minutes: Annotated[int, within(1, 24 * 60)] = Field(
        10, description="Minutes between polls of the inbox and sources."
    )
    sources: Annotated[list[str], Rule(check=checks.sources)] = Field(
        [],
        description="Listing URLs fetched into the inbox (HF daily-papers JSON, arXiv RSS/Atom,"
        " text dumps).",
    )
    fetch_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0,
        description="Seconds the whole fetch may take: sources are fetched at the same time"
        " (8 at once), retries and slow servers included.",
    )
    fetch_max_bytes: Annotated[int, within(1, 100_000_000_000)] = Field(
        50_000_000, description="Largest body accepted from a source."
    )
    log_format: Annotated[str, Rule(check=checks.log_format)] = Field(
        "auto", description="auto (JSON when not on a terminal), json or text."
    )
    feed_files: Annotated[str, Rule(check=checks.feed_files)] = Field(
        "auto",
        description="Feed files a run writes: all (public and one private feed per subscriber),"
        " public (the web front serves the private ones live), or auto (public under"
        " `digest serve` and on a PostgreSQL store, all otherwise); all is refused on a"
        " PostgreSQL store.",
    )
    web_host: Annotated[str, Rule(check=checks.host)] = Field(
        "127.0.0.1", description="Address the web front listens on."
    )
    web_port: Annotated[int, within(1, 65_535)] = Field(
        8000, description="Port the web front listens on."
    )
    web_workers: Annotated[int, within(1, 64)] = Field(
        1, description="Web worker processes of `digest web` (`digest serve` runs one)."
    )
    web_header_timeout: Annotated[float, Field(gt=0, le=300)] = Field(
        10.0,
        description="Seconds a client of the web front has to send a request's headers,"
        " from connecting or from its first byte; then the connection is closed.",
    )
    forwarded_allow_ips: Annotated[str, Rule(check=checks.proxies)] = Field(
        "127.0.0.1",
        description="Proxies whose X-Forwarded-For/-Proto headers are trusted (comma-separated"
        " addresses, or * for any).",
    )
    confirm_hours: Annotated[float, within(0.1, 24 * 30)] = Field(
        48.0, description="Hours a subscription's confirmation link stays valid."
    )
    max_pending_hours: Annotated[float, within(1, 24 * 30)] = Field(
        24.0,
        description="Hours a digest may wait to be sent before /healthz answers 503 and"
        " `digest status` warns.",
    )
    metrics_token: Annotated[str, Rule(secret=True, check=checks.token)] = Field(
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
        kind = BY_NAME[info.field_name].kind if info.field_name in BY_NAME else None
        if isinstance(value, bool) and kind in {int, float}:
            raise ValueError("must be a whole number" if kind is int else "must be a number")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> Any:
        option = BY_NAME.get(str(info.field_name))
        if option is None:
            return value
        problem = option.check(value) if option.check is not None else None
        if problem:
            raise ValueError(problem)
        if isinstance(value, Path):
            return Path(absolute(option.name, str(value), where_now().cwd))
        return absolute(option.name, value, where_now().cwd)

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
        if value == "all" and checks.shared_store(str(info.data.get("database_url", ""))):
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
        where = where_now()
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        sources.append(Environment(settings_cls, where.environ))
        if where.config_path is not None:
            sources.append(TomlFile(settings_cls, where.config_path))
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
        return checks.shared_store(self.database_url)

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


BY_NAME: dict[str, Option] = {
    name: option_of(name, info)
    for name, info in Settings.model_fields.items()
    if name not in FILE_FIELDS
}
OPTIONS: tuple[Option, ...] = tuple(BY_NAME.values())


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
