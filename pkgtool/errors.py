"""User-facing errors.

Anything raised as a :class:`PkgtoolError` is a problem the user can fix (bad input, an
unreachable service, a digest mismatch).  The CLI prints its message as one line and exits
non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class PkgtoolError(Exception):
    """A failure to report to the user as one line, without a traceback."""

    exit_code = 1


class UsageError(PkgtoolError):
    """The command line or an input file is malformed."""

    exit_code = 2


class RegistryError(PkgtoolError):
    """A registry operation failed (after retries where they make sense)."""


class DigestMismatchError(PkgtoolError):
    """Content did not hash to the digest that named it."""


class CacheError(PkgtoolError):
    """The local OCI layout cache is unusable or inconsistent."""
