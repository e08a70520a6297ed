"""Debian package metadata as an image carries it: dpkg status paragraphs, DEP-5 copyright.

Two places list installed packages:

* ``var/lib/dpkg/status``: the dpkg database of a full Debian root, one paragraph per
  package; only those whose ``Status`` ends in ``installed`` are installed;
* ``var/lib/dpkg/status.d/<name>``: distroless-style entries, one paragraph each, written
  by images that copied files out of Debian packages instead of running dpkg (the
  ``FROM scratch`` packages in this repository).  These often have no ``Status`` field:
  their presence is the claim.

Licenses come from ``usr/share/doc/<package>/copyright`` when it is a machine-readable
(DEP-5) file: the ``License:`` short names of its ``Files:`` paragraphs, translated to SPDX
identifiers where the Debian name has an SPDX equivalent.  Anything else (no file, free
text, a name we cannot translate) is reported as unknown, never guessed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

# Debian's short names (DEP-5 section "License short name") that differ from SPDX ids.
_DEBIAN_TO_SPDX = {
    "gpl-1": "GPL-1.0-only", "gpl-1+": "GPL-1.0-or-later",
    "gpl-2": "GPL-2.0-only", "gpl-2+": "GPL-2.0-or-later",
    "gpl-3": "GPL-3.0-only", "gpl-3+": "GPL-3.0-or-later",
    "lgpl-2": "LGPL-2.0-only", "lgpl-2+": "LGPL-2.0-or-later",
    "lgpl-2.1": "LGPL-2.1-only", "lgpl-2.1+": "LGPL-2.1-or-later",
    "lgpl-3": "LGPL-3.0-only", "lgpl-3+": "LGPL-3.0-or-later",
    "agpl-3": "AGPL-3.0-only", "agpl-3+": "AGPL-3.0-or-later",
    "gfdl-1.2": "GFDL-1.2-only", "gfdl-1.2+": "GFDL-1.2-or-later",
    "gfdl-1.3": "GFDL-1.3-only", "gfdl-1.3+": "GFDL-1.3-or-later",
    "apache-2": "Apache-2.0", "apache-2.0": "Apache-2.0",
    "artistic": "Artistic-1.0", "artistic-1.0": "Artistic-1.0", "artistic-2.0": "Artistic-2.0",
    "bsd-2-clause": "BSD-2-Clause", "bsd-3-clause": "BSD-3-Clause", "bsd-4-clause": "BSD-4-Clause",
    "expat": "MIT", "mit": "MIT", "isc": "ISC", "zlib": "Zlib", "cc0": "CC0-1.0",
    "cc0-1.0": "CC0-1.0", "mpl-1.1": "MPL-1.1", "mpl-2.0": "MPL-2.0", "psf-2": "PSF-2.0",
    "python-2.0": "Python-2.0", "openssl": "OpenSSL", "x11": "X11", "curl": "curl",
    "bsl-1.0": "BSL-1.0", "ftl": "FTL", "unicode-dfs-2016": "Unicode-DFS-2016",
}
_PARAGRAPH_SPLIT = re.compile(r"\n[ \t]*\n")
_FIELD = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*):[ \t]?(.*)$")
_LICENSE_REF_CHARS = re.compile(r"[^A-Za-z0-9.-]+")


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    architecture: str
    source: str | None
    source_version: str | None
    maintainer: str | None
    homepage: str | None


def paragraphs(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs as {field (case as written): value}; continuation lines joined
    with newlines (a lone ``.`` is an empty line, per Debian policy)."""
    for block in _PARAGRAPH_SPLIT.split(text.replace("\r\n", "\n").strip("\n")):
        fields: dict[str, str] = {}
        current: str | None = None
        for line in block.split("\n"):
            if not line or line.startswith("#"):
                continue
            if line[0] in " \t":
                if current is not None:
                    part = line.strip()
                    fields[current] += "\n" + ("" if part == "." else part)
                continue
            match = _FIELD.match(line)
            if match is None:
                current = None  # not deb822: skip the line rather than misread it
                continue
            current = match.group(1)
            fields[current] = match.group(2).strip()
        if fields:
            yield fields


def _get(fields: dict[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in fields.items():
        if key.lower() == lowered:
            return value
    return None


def parse_status(data: bytes, *, require_installed: bool) -> list[DebPackage]:
    """Packages in a dpkg status file (``require_installed``) or a status.d entry."""
    found = []
    for fields in paragraphs(data.decode("utf-8", "replace")):
        name, version = _get(fields, "Package"), _get(fields, "Version")
        if not name or not version:
            continue
        status = _get(fields, "Status")
        # "install ok installed": the last word is the state; half-installed, config-files
        # or not-installed packages are not in the image.
        if (status is not None or require_installed) and (not status or status.split()[-1] != "installed"):
            continue
        source, source_version = None, None
        if raw_source := _get(fields, "Source"):
            # "Source: name (version)" when the source version differs.
            match = re.match(r"^(\S+)(?:\s+\((\S+)\))?", raw_source)
            if match:
                source, source_version = match.group(1), match.group(2)
        found.append(DebPackage(
            name=name.split(":")[0], version=version,
            architecture=_get(fields, "Architecture") or "",
            source=source, source_version=source_version or (version if source else None),
            maintainer=_get(fields, "Maintainer"), homepage=_get(fields, "Homepage"),
        ))
    return found


# --------------------------------------------------------------------------- licenses


@dataclass(frozen=True)
class LicenseInfo:
    """An SPDX license expression, plus the LicenseRef-… ids it uses and their texts."""

    expression: str
    extracted: tuple[tuple[str, str, str], ...] = ()  # (LicenseRef id, Debian name, text)


def copyright_licenses(data: bytes, *, package: str) -> LicenseInfo | None:
    """The licenses a DEP-5 copyright file declares, or None if it is not DEP-5."""
    text = data.decode("utf-8", "replace")
    parsed = list(paragraphs(text))
    if not parsed or "copyright-format" not in (_get(parsed[0], "Format") or ""):
        return None
    texts: dict[str, str] = {}
    names: list[str] = []
    for fields in parsed:
        license_field = _get(fields, "License")
        if license_field is None:
            continue
        short, _, body = license_field.partition("\n")
        short = " ".join(short.split())
        if not short:
            continue
        if _get(fields, "Files") is not None:
            names.append(short)
        elif body.strip():
            texts.setdefault(short.lower(), body.strip())
    if not names:
        return None
    expressions: list[str] = []
    extracted: dict[str, tuple[str, str, str]] = {}
    for short in dict.fromkeys(names):
        expression, refs = _to_spdx(short)
        for ref, debian_name in refs:
            body = texts.get(debian_name.lower()) or (
                f"The license named {debian_name!r} in usr/share/doc/{package}/copyright; "
                "it has no SPDX identifier."
            )
            extracted.setdefault(ref, (ref, debian_name, body))
        expressions.append(expression)
    unique = sorted(dict.fromkeys(expressions))
    joined = unique[0] if len(unique) == 1 else " AND ".join(_group(e) for e in unique)
    return LicenseInfo(joined, tuple(sorted(extracted.values())))


def _to_spdx(short: str) -> tuple[str, list[tuple[str, str]]]:
    """A DEP-5 short license expression as SPDX, with the LicenseRefs it needed."""
    refs: list[tuple[str, str]] = []
    if re.search(r"\bwith\b", short, re.IGNORECASE):
        # "GPL-2+ with OpenSSL exception": exceptions have no reliable SPDX mapping.
        ref = license_ref(short)
        return ref, [(ref, short)]
    out: list[str] = []
    for token in re.split(r"\s+", short.replace(",", " or ")):
        lowered = token.lower()
        if lowered in ("or", "and"):
            out.append(lowered.upper())
            continue
        spdx = _DEBIAN_TO_SPDX.get(lowered)
        if spdx is None:
            ref = license_ref(token)
            refs.append((ref, token))
            spdx = ref
        out.append(spdx)
    # A malformed expression ("GPL-2 or", "and MIT") becomes one opaque reference.
    if not out or out[0] in ("OR", "AND") or out[-1] in ("OR", "AND") or any(
        a in ("OR", "AND") and b in ("OR", "AND") for a, b in itertools.pairwise(out)
    ):
        ref = license_ref(short)
        return ref, [(ref, short)]
    return " ".join(out), refs


def license_ref(name: str) -> str:
    return "LicenseRef-" + (_LICENSE_REF_CHARS.sub("-", name).strip("-") or "unknown")


def _group(expression: str) -> str:
    return f"({expression})" if " " in expression else expression
