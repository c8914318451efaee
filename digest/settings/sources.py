"""Where the settings come from: the TOML file and the ``DIGEST_*`` variables, each a
pydantic-settings source of ``Settings``.

The file's ``[[subscribers]]`` tables are checked and split off, its relative paths are
made absolute from its folder, and an unknown key is refused; relative paths given
elsewhere are taken from the working directory. ``Where`` is what one reading looks at.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, TomlConfigSettingsSource

from digest.errors import ConfigError
from digest.settings import checks
from digest.store.subscription import CHOICES, FieldError, SubscriptionPatch

# The fields of ``Settings`` the file source fills in: what it read, and its tables. No settings.
FILE_FIELDS = frozenset({"config_path", "sample_subscribers"})


def _settings_of(settings_cls: type[BaseSettings]) -> set[str]:
    """The names of the settings: the fields, but those the file source fills in."""
    return set(settings_cls.model_fields) - FILE_FIELDS


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


def absolute(name: str, raw: Any, base: Path) -> Any:
    """``raw`` made absolute from ``base``; a value of the wrong kind is left to validation."""
    clean = isinstance(raw, str) or (isinstance(raw, list) and all(isinstance(v, str) for v in raw))
    if name not in _RELATIVE or not clean or "\0" in str(raw):
        return raw
    try:
        return _RELATIVE[name](raw, base)
    except ValueError:  # an unreadable URL: its check says so
        return raw


@dataclass(frozen=True)
class Where:
    """Where ``load_settings`` reads from: the file, the variables and the working folder."""

    config_path: Path | None
    environ: Mapping[str, str]
    cwd: Path


WHERE: ContextVar[Where | None] = ContextVar("digest_settings_where", default=None)


def where_now() -> Where:
    return WHERE.get() or Where(None, os.environ, Path.cwd())


class TomlFile(TomlConfigSettingsSource):
    """The settings file: its ``[[subscribers]]`` tables checked and split off, its relative
    paths made absolute from its folder, an unknown key refused."""

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path) -> None:
        self.names = _settings_of(settings_cls)  # the base class reads the file as it starts
        super().__init__(settings_cls, toml_file)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        assert isinstance(file_path, Path)
        try:
            data = tomllib.loads(file_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {file_path.name}: {exc}") from None
        samples = sample_subscribers(data.pop("subscribers", []), file_path.name)
        unknown = [key for key in data if key not in self.names]
        if unknown:
            raise ConfigError(f"config file {file_path.name}: unknown setting {unknown[0]!r}")
        values = {name: absolute(name, raw, file_path.parent) for name, raw in data.items()}
        return {**values, "config_path": file_path, "sample_subscribers": samples}


class Environment(EnvSettingsSource):
    """``DIGEST_<NAME>`` variables of the environment handed in; a list is written ``a, b``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.names = _settings_of(settings_cls)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {key.lower(): value for key, value in self.environ.items()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name not in self.names:  # the file's path and tables are no settings
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        return [part.strip() for part in str(value).replace("\n", ",").split(",") if part.strip()]


# The keys of a [[subscribers]] table: a subscriber's fields, but its status (it is added active).
SAMPLE_KEYS = tuple(name for name in CHOICES if name != "status")


def _sample_fault(name: str, item: dict[str, Any], where: str, reason: str) -> str:
    shown = repr(item[name])
    shown = shown if len(shown) <= 40 else shown[:39] + "…"
    return f"setting {name} ({shown}) from {where} {reason}"


def sample_subscribers(samples: Any, file_name: str) -> tuple[SubscriptionPatch, ...]:
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
        for name, check in (("email", checks.subscriber_email), ("interests", checks.interests)):
            fault = check(item[name]) if name in item else None
            if fault is not None:
                raise ConfigError(_sample_fault(name, item, where, fault))
        checked.append(patch)
    return tuple(checked)
