"""Reading the settings: which file (``--config``, ``DIGEST_CONFIG`` or ``./digest.toml``),
the file and the ``DIGEST_*`` variables made into ``Settings``, and a bad value named with
where it came from (never echoing a secret); and the commented file ``digest init`` writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from digest.errors import ConfigError
from digest.settings.model import BY_NAME, OPTIONS, Settings
from digest.settings.options import Option, number, reason, shown_value
from digest.settings.sources import WHERE, Where

DEFAULT_CONFIG_NAME = "digest.toml"


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


def _made(where: Where) -> Settings:
    """The settings read from ``where``, or a ConfigError naming the first bad setting and
    where it came from; a secret is never echoed."""
    token = WHERE.set(where)
    try:
        return Settings()  # type: ignore[call-arg]  # the sources give every value
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0])
        option = BY_NAME[name]
        origin = _env_name(name)
        if origin not in where.environ and where.config_path is not None:
            origin = where.config_path.name
        shown = shown_value(option, error["input"])
        raise ConfigError(f"setting {name}{shown} from {origin} {reason(option, error)}") from None
    finally:
        WHERE.reset(token)


def load_settings(
    config: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Read the settings file and ``DIGEST_*`` variables, validate, resolve paths."""
    env = dict(os.environ if environ is None else environ)
    cwd = Path.cwd() if cwd is None else cwd
    config_path = _config_path(config, env, cwd)
    if config_path is not None and any(_env_name(name) in env for name in BY_NAME):
        _made(Where(config_path, {}, cwd))  # a bad value in the file is refused, even hidden
    return _made(Where(config_path, env, cwd))


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
        return f" ({number(option.low)} to {number(option.high)})"
    if option.high is not None:
        return f" (at most {number(option.high)})"
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
