"""What the host's apt knows about kernel packages: ``apt-cache show`` records, parsed.

The answers come from the host's package lists (``apt-get update`` refreshes them; foreign
architectures need ``dpkg --add-architecture``).  Every call goes through an
:class:`AptCache` whose ``run`` can be replaced, so the lock logic is tested with fake apt
output and the real apt is only needed by the integration tests.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pkgtool.errors import PkgtoolError

# (argv) -> (returncode, stdout, stderr)
Runner = Callable[[Sequence[str]], tuple[int, str, str]]

_DEPENDS_ITEM_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9+.-]+)(?::[a-z0-9]+)?\s*(?:\((?P<op>[<>=]+)\s*(?P<version>[^)\s]+)\))?$")


class AptError(PkgtoolError):
    """apt-cache failed, or does not know a package the kernel needs."""


@dataclass(frozen=True)
class AptRecord:
    """One stanza of ``apt-cache show``: the fields pkgtool reads."""

    package: str
    version: str
    architecture: str
    sha256: str
    size: int
    filename: str
    depends: str = ""

    def depends_on(self) -> list[tuple[str, str]]:
        """``Depends:`` as (name, exact version or "") pairs; alternatives keep the first."""
        out: list[tuple[str, str]] = []
        for clause in self.depends.split(","):
            first = clause.split("|")[0].strip()
            if not first:
                continue
            match = _DEPENDS_ITEM_RE.match(first)
            if match is None:
                continue
            exact = match.group("version") if match.group("op") == "=" else ""
            out.append((match.group("name"), exact or ""))
        return out


def parse_records(text: str, *, what: str) -> list[AptRecord]:
    """Every stanza of ``apt-cache show`` output (RFC 822 style, blank-line separated)."""
    records: list[AptRecord] = []
    for stanza in re.split(r"\n\s*\n", text.strip()):
        if not stanza.strip():
            continue
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t"):
                if key:
                    fields[key] += "\n" + line.strip()
                continue
            key, sep, value = line.partition(":")
            if not sep:
                raise AptError(f"{what}: unexpected line in apt-cache output: {line[:80]!r}")
            key = key.strip()
            fields[key] = value.strip()
        missing = [k for k in ("Package", "Version", "Architecture", "SHA256") if not fields.get(k)]
        if missing:
            raise AptError(f"{what}: apt-cache record lacks {', '.join(missing)}")
        size = fields.get("Size", "0")
        records.append(AptRecord(
            package=fields["Package"], version=fields["Version"], architecture=fields["Architecture"],
            sha256=fields["SHA256"].lower(), size=int(size) if size.isdigit() else 0,
            filename=fields.get("Filename", ""), depends=fields.get("Depends", ""),
        ))
    return records


def _run(argv: Sequence[str]) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False,
                              env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    except FileNotFoundError:
        raise AptError(f"{argv[0]} not found: kernel pins are resolved with Debian's apt") from None
    return proc.returncode, proc.stdout, proc.stderr


def _qualified(package: str, arch: str) -> str:
    return package if arch in ("", "all") else f"{package}:{arch}"


class AptCache:
    def __init__(self, run: Runner | None = None) -> None:
        self.run = run or _run

    def show(self, package: str, arch: str = "", version: str = "", *, all_versions: bool = False) -> list[AptRecord]:
        """Records for ``package[:arch][=version]``; [] if apt knows no such package/version."""
        name = _qualified(package, arch) + (f"={version}" if version else "")
        argv = ["apt-cache", "show"] + ([] if all_versions or version else ["--no-all-versions"]) + [name]
        rc, out, err = self.run(argv)
        if rc != 0:
            text = " ".join((err or out).split())
            if "No packages found" in text or "Unable to locate" in text or "Can't select" in text:
                return []
            raise AptError(f"`{' '.join(argv)}` failed: {text[-300:]}")
        records = parse_records(out, what=name)
        # apt-cache show with an arch qualifier still lists arch-all packages; keep exact matches.
        return [r for r in records if r.package == package and (not arch or r.architecture in (arch, "all"))]

    def candidate(self, package: str, arch: str = "") -> AptRecord:
        """The version apt would install now (its candidate)."""
        found = self.show(package, arch)
        if not found:
            hint = (f"; for a foreign arch run `dpkg --add-architecture {arch} && apt-get update`"
                    if arch not in ("", "all") else "; run `apt-get update`")
            raise AptError(f"apt knows no package {_qualified(package, arch)}{hint}")
        return found[0]

    def exact(self, package: str, arch: str, version: str) -> AptRecord | None:
        """The record of ``package:arch=version``, or None if the mirror no longer has it."""
        found = [r for r in self.show(package, arch, version) if r.version == version]
        return found[0] if found else None

    def update(self) -> None:
        """``apt-get update`` (refresh the package lists; waits for a busy apt lock)."""
        rc, out, err = self.run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=300"])
        if rc != 0:
            raise AptError(f"apt-get update failed: {' '.join((err or out).split())[-300:]}")
