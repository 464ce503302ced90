"""Every way the tool can fail, and the one table of exit codes.

Library code raises a ``MigrateError`` subclass; only ``cli.main`` turns it into
a message and an exit code. ``Transient`` marks failures worth retrying (tenacity
retries only those); every other code is final, so a Kubernetes
``podFailurePolicy`` can stop retrying on it.
"""
from __future__ import annotations

# code, name, meaning, retrying can help?  -- README "Exit codes" mirrors this table
EXIT_CODES = [
    (0, "OK", "every table migrated and verified", False),
    (1, "INTERNAL", "unexpected internal error (a bug: please report it with the log)", False),
    (2, "USAGE", "bad command line or configuration", False),
    (3, "SOURCE", "source SQLite file missing, unreadable, corrupt or locked", False),
    (4, "TARGET", "target PostgreSQL unreachable, authentication failed or no privileges", True),
    (5, "DATA", "a value could not be converted, rows were rejected, or orphan rows block a foreign key", False),
    (6, "VERIFY", "verification found a difference between source and target", False),
    (7, "CONFLICT", "target already holds tables this tool did not create (use --replace)", False),
    (8, "LOCKED", "another migration holds the target's lock", True),
    (9, "PARTIAL", "run finished but covered only part of the source (filters, --limit, unreadable tables)", False),
    (10, "BACKUP", "backup directory unusable: not writable, disk full, or backup incomplete/corrupt", False),
    (130, "INTERRUPTED", "interrupted by a signal (SIGINT/SIGTERM)", True),
]
EXIT = {name: code for code, name, _, _ in EXIT_CODES}


class MigrateError(Exception):
    """A failure with a message for the operator and an exit code."""

    exit_code = EXIT["INTERNAL"]

    def __init__(self, message: str, *, hint: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or {}


class Transient(Exception):
    """Mix-in: retrying the same operation may succeed."""


class UsageError(MigrateError):
    exit_code = EXIT["USAGE"]


class SourceError(MigrateError):
    exit_code = EXIT["SOURCE"]


class TargetError(MigrateError):
    exit_code = EXIT["TARGET"]


class TargetUnavailable(TargetError, Transient):
    """Connection refused / server restarting: worth waiting for."""


class DataError(MigrateError):
    exit_code = EXIT["DATA"]


class VerifyError(MigrateError):
    exit_code = EXIT["VERIFY"]


class ConflictError(MigrateError):
    exit_code = EXIT["CONFLICT"]


class LockedError(MigrateError, Transient):
    exit_code = EXIT["LOCKED"]


class PartialError(MigrateError):
    exit_code = EXIT["PARTIAL"]


class BackupError(MigrateError):
    exit_code = EXIT["BACKUP"]


class ConversionError(ValueError):
    """One value cannot become its target type. Carries the reason; the caller adds where."""
