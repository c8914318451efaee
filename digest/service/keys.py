"""The site's signing keys: which one signs, which verify, and rotating them.

The keys live in the store, so every host pointed at one database signs and verifies the
same links with nothing shared but ``database_url``. The first host to need a key makes it
(or adopts the ``secret.key`` file an install kept before, so nothing already mailed
breaks); a ``secret_key`` setting still signs when given. Rotating adds a key that signs
after ``KEY_NOTICE``, by which time every host has read it (they read the keys again every
``KEYS_REFRESH``); the old keys verify until they are retired.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from digest.errors import ConfigError, StoreError, UsageError
from digest.settings import Settings
from digest.store.engine import reading, transaction
from digest.store.site import (
    KeyRow,
    add_first_key,
    add_generation,
    adopt_key,
    key_rows,
    retire_key,
)
from digest.tokens import SiteKeys

KEY_NOTICE = timedelta(minutes=5)  # a new key signs only once every host has read it
KEYS_REFRESH = 60.0  # seconds: how often a long-running process reads the keys again
KEY_FILE = "secret.key"  # where an install kept its key before the store did


def _file_key(path: Path) -> bytes | None:
    """The key of an older install's key file, if it has one (only ever read now)."""
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the secret key {path}: {exc.strerror}") from None
    if not key:
        raise ConfigError(f"the secret key file {path} is empty: remove it")
    return key


def _signer(rows: Sequence[KeyRow], now: datetime) -> KeyRow | None:
    signers = [
        row
        for row in rows
        if row.retired_at is None
        and row.generation is not None
        and row.signs_from is not None
        and row.signs_from <= now
    ]
    return max(signers, key=lambda row: row.generation or 0, default=None)


def keys_of(rows: Sequence[KeyRow], now: datetime, configured: bytes = b"") -> SiteKeys | None:
    """The keys as they stand at ``now``: ``configured`` (the setting) or the newest
    generation whose time has come signs; every key not retired verifies, newest first.
    None when nothing can sign."""
    signer = _signer(rows, now)
    signing = configured or (signer.key if signer else b"")
    if not signing:
        return None
    live = sorted(
        (row for row in rows if row.retired_at is None),
        key=lambda row: (row.generation or 0, row.id),
        reverse=True,
    )
    return SiteKeys(signing, (signing, *[row.key for row in live if row.key != signing]))


def site_keys(settings: Settings, engine: Engine, now: datetime) -> SiteKeys:
    """The site's keys, making the first one (or adopting the key file) when the store has
    none: hosts doing so at once end up with the same key."""
    file_key = _file_key(settings.data_dir / KEY_FILE)
    configured = settings.secret_key.encode()
    with reading(engine) as conn:
        rows = key_rows(conn)
        conn.rollback()
    adopted = file_key is None or any(row.key == file_key for row in rows)
    found = keys_of(rows, now, configured)
    if found is not None and adopted:
        return found
    with transaction(engine) as conn:
        if file_key is not None:
            add_first_key(conn, file_key, now)  # nothing when a generation 1 exists ...
            adopt_key(conn, file_key, now)  # ... so it verifies; nothing when stored above
        rows = key_rows(conn)
        if keys_of(rows, now, configured) is None:
            if any(row.generation is not None for row in rows):
                # every key that signed is retired: a new one signs at once
                add_generation(conn, secrets.token_hex(32).encode(), now, now)
            else:
                add_first_key(conn, secrets.token_hex(32).encode(), now)
            rows = key_rows(conn)
    found = keys_of(rows, now, configured)
    if found is None:  # made above; only a store changed under us gets here
        raise StoreError("the site's signing key could not be made; try again")
    return found


@dataclass(frozen=True)
class KeyState:
    """A key as ``digest keys list`` shows it: never the key itself, a fingerprint."""

    id: int
    generation: int | None
    fingerprint: str
    state: str  # signs, verifies, waits (signs from ``signs_from``), retired
    created_at: datetime
    signs_from: datetime | None
    retired_at: datetime | None

    def as_json(self) -> dict[str, object]:
        """The key's figures as ``keys list --json`` prints them."""
        return {
            "id": self.id,
            "generation": self.generation,
            "fingerprint": self.fingerprint,
            "state": self.state,
            "created_at": self.created_at.isoformat(),
            "signs_from": self.signs_from.isoformat() if self.signs_from else None,
            "retired_at": self.retired_at.isoformat() if self.retired_at else None,
        }


def fingerprint(key: bytes) -> str:
    """A short name of a key that tells keys apart without giving them away."""
    return hashlib.sha256(b"digest key fingerprint:" + key).hexdigest()[:12]


def _state(row: KeyRow, signer: KeyRow | None, configured: bool, now: datetime) -> str:
    if row.retired_at is not None:
        return "retired"
    if signer is not None and row.id == signer.id and not configured:
        return "signs"
    if row.generation is not None and row.signs_from is not None and row.signs_from > now:
        return "waits"
    return "verifies"


def list_keys(settings: Settings, engine: Engine, now: datetime) -> list[KeyState]:
    """Every stored key and what it does now (making the first one if there is none)."""
    site_keys(settings, engine, now)
    with reading(engine) as conn:
        rows = key_rows(conn)
        conn.rollback()
    signer = _signer(rows, now)
    configured = bool(settings.secret_key)
    return [
        KeyState(
            row.id,
            row.generation,
            fingerprint(row.key),
            _state(row, signer, configured, now),
            row.created_at,
            row.signs_from,
            row.retired_at,
        )
        for row in rows
    ]


def rotate_key(
    settings: Settings, engine: Engine, now: datetime, *, at_once: bool = False
) -> KeyState:
    """A new key that signs from ``now + KEY_NOTICE`` (``at_once``: from now, for a site
    of one process); the others keep verifying until retired."""
    site_keys(settings, engine, now)
    with transaction(engine) as conn:
        row = add_generation(
            conn, secrets.token_hex(32).encode(), now, now if at_once else now + KEY_NOTICE
        )
    return KeyState(
        row.id,
        row.generation,
        fingerprint(row.key),
        "signs" if at_once and not settings.secret_key else "waits",
        row.created_at,
        row.signs_from,
        None,
    )


def retire(settings: Settings, engine: Engine, ident: int, now: datetime) -> KeyState:
    """Retire key ``ident``: the links it signed stop working on every host (within
    ``KEYS_REFRESH``). The key that signs is refused: rotate first."""
    with reading(engine) as conn:
        rows = key_rows(conn)
        conn.rollback()
    signer = _signer(rows, now)
    if signer is not None and signer.id == ident and not settings.secret_key:
        raise UsageError(
            f"keys retire: key {ident} signs new links; rotate first (digest keys rotate)"
            " and retire it once the new key signs"
        )
    with transaction(engine) as conn:
        row = retire_key(conn, ident, now)
    return KeyState(
        row.id,
        row.generation,
        fingerprint(row.key),
        "retired",
        row.created_at,
        row.signs_from,
        row.retired_at,
    )
