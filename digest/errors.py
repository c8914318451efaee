"""The one error family of digest.

Every failure an operator can expect (a bad setting, a broken dump, a mail
server saying no, a full disk) is a ``DigestError``. The command line turns it
into a one-line message on stderr and exit code 1 (``UsageError`` and
``ConfigError``: 2), never a traceback. Anything else escaping is a bug.

Ingest tells two kinds of failure apart. A dump that is bad in itself
(``ListingError``) is set aside in the inbox's ``failed/`` folder; one that met
a failure of the machine (``ListingUnreadable``, ``StoreError``, ``WriteError``,
running out of memory) stays in the inbox and is tried again by the next run.
"""

from __future__ import annotations


class DigestError(Exception):
    """Base of every expected failure; ``str()`` is the one-line message."""

    exit_code = 1


class UsageError(DigestError):
    """The command was called wrongly (bad argument, malformed interest)."""

    exit_code = 2


class ConfigError(DigestError):
    """A setting is missing or invalid; the message names the setting."""

    exit_code = 2  # like a bad argument: the operator has to change what they asked for


class ListingError(DigestError):
    """A file is not a listing we can read; carries the file and, where known, the line."""

    def __init__(self, message: str, path: str = "", line: int | None = None) -> None:
        self.reason = message
        self.path = path
        self.line = line
        where = path
        if line is not None:
            where = f"{path}:{line}" if path else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)

    def at(self, path: str) -> ListingError:
        """The same error, naming the file it came from."""
        return type(self)(self.reason, path, self.line)


class ListingUnreadable(ListingError):
    """The file could not be read (an I/O error, no permission): not the file's fault."""


class StoreError(DigestError):
    """The database could not be opened, migrated or written (locked, disk full, …)."""


class StoreCorrupt(StoreError):
    """The database file is damaged or is no database at all: nothing can go on."""


class WriteError(DigestError):
    """A file in the data folder (a feed, the run lock, an error note) could not be written."""


class AlreadyRunning(DigestError):
    """Another run holds the lock; cron scripts test for this exit code."""

    exit_code = 75  # EX_TEMPFAIL: "try again later"


class LockLost(DigestError):
    """The run lock went away under a run (its database connection was ended): the run
    stopped; what it left is for the next run."""

    exit_code = 75  # like AlreadyRunning: try again later, and the next run finishes the job


class DeliveryError(DigestError):
    """A message could not be handed to the transport.

    ``permanent``: the server refused the recipient for good (the address bounces).
    ``counts``: the failure is an answer about this recipient, so it costs the digest one
    of its attempts; faults nobody is to blame for (the server is down, a dropped
    connection, a full disk) cost nothing.
    """

    counts = True

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
