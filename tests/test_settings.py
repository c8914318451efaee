"""Settings: defaults, the file, DIGEST_* variables, and errors that name the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from digest.errors import ConfigError
from digest.settings import load_settings
from digest.settings.load import default_config_text
from digest.settings.model import OPTIONS


def test_defaults_put_everything_under_one_data_folder(tmp_path: Path) -> None:
    settings = load_settings(environ={}, cwd=tmp_path)
    data = tmp_path / "data"
    assert settings.data_dir == data
    assert settings.database_url == f"sqlite:///{data / 'digest.db'}"
    assert settings.inbox == data / "inbox"
    assert settings.feeds_dir == data / "feeds"
    assert settings.mail_transport == f"file://{data / 'outbox'}"


def test_file_then_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "digest.toml"
    config.parent.mkdir()
    config.write_text('data_dir = "var"\nfeed_items = 7\nsources = ["http://a", "http://b"]\n')
    settings = load_settings(config, environ={"DIGEST_FEED_ITEMS": "9"}, cwd=tmp_path)
    assert settings.data_dir == config.parent / "var"  # relative to the file's folder
    assert settings.feed_items == 9
    assert settings.sources == ["http://a", "http://b"]
    via_env = load_settings(environ={"DIGEST_CONFIG": str(config)}, cwd=tmp_path)
    assert via_env.feed_items == 7


def test_environment_list_and_number_forms(tmp_path: Path) -> None:
    env = {"DIGEST_SOURCES": "http://a, http://b", "DIGEST_SMTP_RATE": "2.5"}
    settings = load_settings(environ=env, cwd=tmp_path)
    assert settings.sources == ["http://a", "http://b"]
    assert settings.smtp_rate == 2.5


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DIGEST_FEED_ITEMS": "many"}, "feed_items"),
        ({"DIGEST_FEED_ITEMS": "0"}, "feed_items"),
        ({"DIGEST_TIMEZONE": "Mars/Olympus"}, "timezone"),
        ({"DIGEST_BASE_URL": "localhost"}, "base_url"),
        ({"DIGEST_SCHEDULE": "daily"}, "schedule"),
        ({"DIGEST_SMTP_CONNECTIONS": "100000000"}, "smtp_connections"),
        ({"DIGEST_FEED_ITEMS": "9" * 30}, "feed_items"),
        ({"DIGEST_SMTP_RATE": "nan"}, "smtp_rate"),
        ({"DIGEST_SMTP_TIMEOUT": "inf"}, "smtp_timeout"),
        ({"DIGEST_MAIL_TRANSPORT": "smtp://u:p@[::1"}, "mail_transport"),
        ({"DIGEST_MAIL_TRANSPORT": "smtp://u:p@host:99999"}, "mail_transport"),
        ({"DIGEST_BASE_URL": "https://[::1"}, "base_url"),
    ],
)
def test_bad_setting_names_itself(tmp_path: Path, env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=env, cwd=tmp_path)


PG = "postgresql+psycopg://digest:secret@db.example.org/digest"


@pytest.mark.parametrize(
    ("database", "feed_files", "private"),
    [
        ("", "auto", True),
        ("", "all", True),
        ("", "public", False),
        (PG, "auto", False),  # several hosts may share it: the web front serves them live
        (PG, "public", False),
    ],
)
def test_private_feed_files_only_on_a_store_of_one_host(
    tmp_path: Path, database: str, feed_files: str, private: bool
) -> None:
    env = {"DIGEST_FEED_FILES": feed_files, "DIGEST_DATABASE_URL": database}
    settings = load_settings(environ=env, cwd=tmp_path)
    assert settings.private_feed_files is private
    assert settings.shared_store is bool(database)


def test_private_feed_files_are_refused_on_a_postgresql_store(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text(f'database_url = "{PG}"\nfeed_files = "all"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={}, cwd=tmp_path)
    said = str(caught.value)
    assert said.startswith("setting feed_files ('all') from digest.toml must be public or auto")
    assert "PostgreSQL store" in said and "secret" not in said


def test_bad_secret_is_not_echoed(tmp_path: Path) -> None:
    secret = "pop3://user:hunter2@mail.example"
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"DIGEST_MAIL_TRANSPORT": secret}, cwd=tmp_path)
    assert "mail_transport" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text("feed_itmes = 3\n")
    with pytest.raises(ConfigError, match="feed_itmes"):
        load_settings(config, environ={}, cwd=tmp_path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={}, cwd=tmp_path)


def test_default_config_text_lists_every_option_and_loads(tmp_path: Path) -> None:
    text = default_config_text()
    for option in OPTIONS:
        assert f"# {option.name} = " in text
    uncommented = "\n".join(
        line[2:] for line in text.splitlines() if line.startswith("# ") and " = " in line
    )
    config = tmp_path / "digest.toml"
    config.write_text(uncommented)
    defaults = load_settings(environ={}, cwd=tmp_path).model_copy(update={"config_path": config})
    assert load_settings(config, environ={}, cwd=tmp_path) == defaults


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ('email = "a@example.org"\ninterests = ["x"]\nmax_items = "lots"', "max_items"),
        ('email = "a@example.org"\ninterests = "abc"', "interests"),
        ('email = "a@example.org"\ninterests = ["x"]\nmin_score = nan', "min_score"),
        ('email = "a@example.org"\ninterests = ["x"]\nmax_items = 99999999999', "max_items"),
        ('email = "a@example.org"\ninterest = ["x"]', "interest"),
        ('interests = ["x"]', "email"),
    ],
)
def test_bad_subscribers_table_names_the_key(tmp_path: Path, table: str, named: str) -> None:
    config = tmp_path / "digest.toml"
    config.write_text(f"[[subscribers]]\n{table}\n")
    with pytest.raises(ConfigError, match=named) as caught:
        load_settings(config, environ={}, cwd=tmp_path)
    assert "[[subscribers]] table 1" in str(caught.value)


def test_a_subscribers_table_takes_the_hour_of_the_digest(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text(
        '[[subscribers]]\nemail = "a@example.org"\ninterests = ["x"]\ndigest_hour = 8\n'
    )
    (table,) = load_settings(config, environ={}, cwd=tmp_path).sample_subscribers
    assert table["digest_hour"] == 8
    config.write_text(
        '[[subscribers]]\nemail = "a@example.org"\ninterests = ["x"]\ndigest_hour = 30\n'
    )
    with pytest.raises(ConfigError, match=r"digest_hour .30. from .*table 1 must be from 0 to 23"):
        load_settings(config, environ={}, cwd=tmp_path)


def test_subscribers_tables_are_read_with_their_types(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text(
        '[[subscribers]]\nemail = "a@example.org"\ninterests = ["x", "y z"]\nmax_items = 5\n'
    )
    (table,) = load_settings(config, environ={}, cwd=tmp_path).sample_subscribers
    assert table == {"email": "a@example.org", "interests": ["x", "y z"], "max_items": 5}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DIGEST_SMTP_CONNECTIONS", "100000000"),
        ("DIGEST_MAIL_TRANSPORT", "smtp://u:p@[::1"),
        ("DIGEST_SMTP_RETRIES", "-1"),
    ],
)
def test_cli_bad_setting_is_exit_2_and_one_line(tmp_path: Path, name: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update({"DIGEST_DATA_DIR": str(tmp_path / "data"), name: value})
    done = subprocess.run(
        [sys.executable, "-m", "digest", "status"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    setting = name.removeprefix("DIGEST_").lower()
    assert done.stderr.startswith(f"digest: setting {setting} ")
    assert "p@" not in done.stderr  # the transport URL holds a password: never echoed
    assert done.stdout == ""
    assert not (tmp_path / "data").exists()


def test_the_settings_are_declared_once_and_read_by_their_own_sources(tmp_path: Path) -> None:
    from pydantic import ValidationError
    from pydantic_settings import BaseSettings

    from digest.settings import Settings

    config = tmp_path / "digest.toml"
    config.write_text('inbox = "in"\nsources = ["feeds/a.json"]\n')
    settings = load_settings(environ={"DIGEST_FEED_ITEMS": "9"}, cwd=tmp_path / "elsewhere")
    assert isinstance(settings, Settings) and issubclass(Settings, BaseSettings)
    assert [option.name for option in OPTIONS] == [
        name for name in Settings.model_fields if name not in {"config_path", "sample_subscribers"}
    ]
    read = load_settings(config, environ={"DIGEST_FEED_ITEMS": "9"}, cwd=tmp_path / "elsewhere")
    assert read.inbox == tmp_path / "in" and read.sources == [str(tmp_path / "feeds/a.json")]
    assert read.feed_items == 9 and read.config_path == config
    with pytest.raises(ValidationError):
        read.feed_items = 3  # type: ignore[misc]
