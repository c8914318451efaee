"""Who can read what digest writes, at the loosest umask there is.

Every command runs as its own process under ``umask 000``, the way a cron line or a
container with no umask set would run it; then every file and folder it left is looked
at. Readers' data (the store, messages, exports, previews) is ``0600``, folders are
``0700``; the feeds are the documented exception, served by a web server running as
another user: feed files ``0644``, the feeds folder ``0755``, ``feeds/private`` ``0711``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from digest.files import make_folder
from tests.conftest import EXAMPLE_B, Site

FEEDS_MODES = {"feeds": 0o755, "feeds/private": 0o711}


def run(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    """A command in its own process, under umask 000."""
    return subprocess.run(
        site.command(*args),
        cwd=site.root,
        env=site.env,
        text=True,
        capture_output=True,
        timeout=120,
        umask=0,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes_under(root: Path) -> dict[str, int]:
    """Every file and folder under ``root`` (itself included, as ``.``) and its mode."""
    found = {".": mode(root)}
    for path in root.rglob("*"):
        found[path.relative_to(root).as_posix()] = mode(path)
    return found


def test_nothing_digest_writes_follows_an_open_umask(site: Site) -> None:
    site.env["DIGEST_MAIL_TRANSPORT"] = ""  # the default: .eml files in <data_dir>/outbox
    done = run(site, "init", "--config", "digest.toml")
    assert done.returncode == 0, done.stderr
    assert mode(site.root / "digest.toml") == 0o600
    assert run(site, "subscribe", "ann@example.org", "--interest", "video").returncode == 0
    inbox = site.data / "inbox"
    shutil.copyfile(EXAMPLE_B, inbox / "daily.txt")
    (inbox / "empty.txt").write_bytes(b"")  # fails: goes to failed/ with an .error note
    done = run(site, "run")
    assert done.returncode == 1, done.stderr  # the empty dump failed; the rest went through
    assert len(list((site.data / "outbox").glob("*.eml"))) == 1
    export = site.root / "readers.csv"
    done = run(site, "subscribers", "--export", str(export))
    assert done.returncode == 0, done.stderr
    previews = [site.root / f"preview{suffix}" for suffix in (".html", ".txt", ".eml")]
    for preview in previews:
        done = run(site, "preview", "ann@example.org", "--all", "--out", str(preview))
        assert done.returncode == 0, done.stderr

    # the export holds every address; a preview holds a working manage link
    assert {path.name: mode(path) for path in [export, *previews]} == {
        "readers.csv": 0o600,
        "preview.html": 0o600,
        "preview.txt": 0o600,
        "preview.eml": 0o600,
    }
    found = modes_under(site.data)
    assert {"inbox/processed/daily.txt", "inbox/failed/empty.txt.error"} <= set(found)
    wrong = {}
    for name, got in found.items():
        path = site.data / name
        if name in FEEDS_MODES:
            want = FEEDS_MODES[name]
        elif name.startswith("feeds/"):
            want = 0o644
        elif path.is_dir():
            want = 0o700
        elif name in ("inbox/processed/daily.txt", "inbox/failed/empty.txt"):
            continue  # a dump the operator dropped in keeps the mode it came with
        else:
            want = 0o600
        if got != want:
            wrong[name] = f"{got:o}, not {want:o}"
    assert wrong == {}


def test_a_folder_anyone_could_write_to_is_narrowed(tmp_path: Path) -> None:
    made = tmp_path / "data" / "inbox"
    made.mkdir(parents=True)
    os.chmod(made, 0o777)  # left by an older version under umask 000
    make_folder(made)
    assert mode(made) == 0o755  # nobody else writes; what the operator opened stays open
    os.chmod(made, 0o750)
    make_folder(made)
    assert mode(made) == 0o750
    make_folder(tmp_path / "a" / "b", 0o755)
    assert (mode(tmp_path / "a"), mode(tmp_path / "a" / "b")) == (0o700, 0o755)


def test_a_file_where_a_folder_goes_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "inbox").write_text("")
    try:
        make_folder(tmp_path / "inbox")
    except NotADirectoryError:
        pass
    else:
        raise AssertionError("a file was taken for a folder")
