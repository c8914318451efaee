"""The installation: its store opened (made or migrated on first use), its data folders, a
backup of a SQLite store while digest runs."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from digest.errors import WriteError
from digest.files import PRIVATE_FOLDER, make_folder
from digest.settings import Settings
from digest.store import engine as store


def open_store(url: str) -> Engine:
    """The store at ``url``, made or migrated to the current schema on first use."""
    return store.open_store(url)


def store_exists(url: str) -> bool:
    """Whether the store at ``url`` has been made (a look at a fresh install makes none)."""
    return store.store_exists(url)


def make_install(settings: Settings) -> None:
    """The data folders (feeds readable by a web server, the rest private) and the store."""
    from digest.feeds.render import FEEDS_FOLDER  # only here: opening a store loads no feeds

    try:
        for folder in settings.folders():
            make_folder(folder, FEEDS_FOLDER if folder == settings.feeds_dir else PRIVATE_FOLDER)
    except OSError as exc:
        raise WriteError(f"cannot make the folder {exc.filename}: {exc.strerror}") from None
    open_store(settings.database_url).dispose()


def backup(settings: Settings, target: Path) -> tuple[str, int]:
    """Copy the SQLite store to ``target``: the store's name as shown, and the bytes copied."""
    size = store.backup_sqlite(settings.database_url, target)
    return store.store_label(settings.database_url), size
