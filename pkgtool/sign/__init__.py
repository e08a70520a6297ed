"""Offline, cosign-compatible signing: keys, payloads, DSSE, Sigstore bundles, attachment.

The submodules import `cryptography` and PyNaCl, so import them where they are used; this
package module stays light and only holds the errors every submodule raises.
"""

from __future__ import annotations

from pkgtool.errors import PkgtoolError


class KeyFileError(PkgtoolError):
    """A key file is unreadable: wrong password, truncated, garbled or of an unsupported type."""


class SignatureError(PkgtoolError):
    """A signature, envelope or bundle failed verification (or is malformed).

    The message names the check that failed, so an auditor can act on it.
    """


__all__ = ["KeyFileError", "SignatureError"]
