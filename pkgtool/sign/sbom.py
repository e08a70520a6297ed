"""SPDX 2.3 JSON SBOMs for one per-arch image: the Debian packages it carries.

The document is a pure function of the image (and pkgtool's version), so signing the same
image twice gives byte-identical SBOMs:

* ``documentNamespace`` is derived from the repository and the manifest digest
  (``https://pkgtool.invalid/spdx/<registry>/<repository>/sha256-<hex>``); ``.invalid`` is
  a reserved domain, so the URI is unique without pretending to be resolvable.
  LinuxKit's SBOMs use a random UUID here, which is what breaks their reproducibility.
* ``creationInfo.created`` is the image config's ``created`` time (pkgtool sets it from
  ``SOURCE_DATE_EPOCH``), or ``1970-01-01T00:00:00Z`` when the config has none: the
  moment the content was made, not the moment someone happened to sign it.
* Packages are sorted by name, version and architecture; SPDX ids are derived from them.

Packages come from ``var/lib/dpkg/status`` and ``var/lib/dpkg/status.d/*`` of the final
file system (:mod:`pkgtool.sign.imagefiles` applies the layers and their whiteouts);
licenses from ``usr/share/doc/<package>/copyright`` (:mod:`pkgtool.sign.dpkg`), else
``NOASSERTION``.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from pkgtool import __version__
from pkgtool.jsonio import hashed_json
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.oci.layer import Layer
from pkgtool.sign.dpkg import DebPackage, LicenseInfo, copyright_licenses, parse_status
from pkgtool.sign.imagefiles import read_files

SPDX_PREDICATE_TYPE = "https://spdx.dev/Document"  # what cosign attaches SPDX JSON as
SPDX_VERSION = "SPDX-2.3"
NOASSERTION = "NOASSERTION"
EPOCH = "1970-01-01T00:00:00Z"
STATUS = "var/lib/dpkg/status"
STATUS_D = "var/lib/dpkg/status.d/"
_COPYRIGHT_RE = re.compile(r"^usr/share/doc/([^/]+)/copyright$")
_SPDXID_CHARS = re.compile(r"[^A-Za-z0-9.-]+")


def wanted(path: str) -> bool:
    """The paths an SBOM is built from."""
    if path == STATUS:
        return True
    if path.startswith(STATUS_D):
        return "/" not in path[len(STATUS_D):] and not path.endswith((".md5sums", ".list"))
    return _COPYRIGHT_RE.match(path) is not None


def installed_packages(files: Mapping[str, bytes]) -> list[DebPackage]:
    """Packages listed by the dpkg files in ``files``; one entry per (name, arch)."""
    found: dict[tuple[str, str], DebPackage] = {}
    if STATUS in files:
        for package in parse_status(files[STATUS], require_installed=True):
            found[(package.name, package.architecture)] = package
    for path in sorted(p for p in files if p.startswith(STATUS_D)):
        for package in parse_status(files[path], require_installed=False):
            found.setdefault((package.name, package.architecture), package)
    return sorted(found.values(), key=lambda p: (p.name, p.version, p.architecture))


def package_licenses(files: Mapping[str, bytes], package: DebPackage) -> LicenseInfo | None:
    for name in (package.name, f"{package.name}:{package.architecture}"):
        data = files.get(f"usr/share/doc/{name}/copyright")
        if data is not None:
            return copyright_licenses(data, package=name)
    return None


def created_time(config: Mapping[str, Any]) -> str:
    """The image config's ``created`` as RFC 3339 UTC, or the epoch when absent or bad."""
    raw = config.get("created")
    if isinstance(raw, str):
        try:
            when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return EPOCH
        if when.tzinfo is not None and when.year >= 1970:
            return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return EPOCH


def image_sbom(
    *,
    repository_name: str,
    manifest: Descriptor,
    platform: Platform,
    layers: Sequence[Layer],
    config: Mapping[str, Any],
) -> bytes:
    """The SPDX JSON document for one per-arch image, streamed from its layers."""
    files = read_files(layers, wanted=wanted, image=f"{repository_name}@{manifest.digest}")
    return spdx_document(
        repository_name=repository_name, manifest_digest=manifest.digest, platform=platform,
        packages=installed_packages(files), files=files, created=created_time(config),
    )


def spdx_document(
    *,
    repository_name: str,
    manifest_digest: str,
    platform: Platform,
    packages: Sequence[DebPackage],
    files: Mapping[str, bytes],
    created: str = EPOCH,
) -> bytes:
    image_id = "SPDXRef-image"
    registry, _, repository = repository_name.partition("/")
    spdx_packages: list[dict[str, Any]] = [{
        "SPDXID": image_id,
        "name": repository_name,
        "versionInfo": manifest_digest,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [_purl(
            f"pkg:oci/{quote(repository.rsplit('/', 1)[-1])}@{quote(manifest_digest)}"
            f"?arch={quote(platform.architecture)}&repository_url={quote(repository_name, safe='')}"
        )],
    }]
    relationships = [{
        "spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    }]
    extracted: dict[str, dict[str, str]] = {}
    used_ids: set[str] = set()
    for package in packages:
        spdx_id = _package_id(package, used_ids)
        licenses = package_licenses(files, package)
        entry: dict[str, Any] = {
            "SPDXID": spdx_id,
            "name": package.name,
            "versionInfo": package.version,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": False,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": licenses.expression if licenses else NOASSERTION,
            "copyrightText": NOASSERTION,
            "externalRefs": [_purl(_deb_purl(package))],
        }
        if package.maintainer:
            entry["supplier"] = "Organization: " + _supplier(package.maintainer)
        if package.homepage:
            entry["homepage"] = package.homepage
        if package.source:
            entry["sourceInfo"] = f"built from Debian source package {package.source} {package.source_version or ''}".rstrip()
        spdx_packages.append(entry)
        relationships.append({
            "spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": spdx_id,
        })
        for ref, name, text in licenses.extracted if licenses else ():
            extracted.setdefault(ref, {"licenseId": ref, "name": name, "extractedText": text})
    document: dict[str, Any] = {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{repository_name}@{manifest_digest} ({platform})",
        "documentNamespace": (
            f"https://pkgtool.invalid/spdx/{registry}/{repository}/{manifest_digest.replace(':', '-')}"
        ),
        "creationInfo": {"created": created, "creators": [f"Tool: pkgtool-{__version__}"]},
        "packages": spdx_packages,
        "relationships": relationships,
    }
    if extracted:
        document["hasExtractedLicensingInfos"] = [extracted[k] for k in sorted(extracted)]
    return hashed_json(document)


def check_sbom(predicate: Mapping[str, Any], *, digest: str) -> int:
    """Minimal checks of an SPDX predicate an attestation carries; the package count."""
    from pkgtool.sign import SignatureError

    if predicate.get("spdxVersion") != SPDX_VERSION:
        raise SignatureError(f"{digest}: SBOM is not {SPDX_VERSION} (spdxVersion {predicate.get('spdxVersion')!r})")
    packages = predicate.get("packages")
    if not isinstance(packages, list):
        raise SignatureError(f"{digest}: SBOM has no packages list")
    image = next((p for p in packages if isinstance(p, dict) and p.get("SPDXID") == "SPDXRef-image"), None)
    if image is not None and image.get("versionInfo") != digest:
        raise SignatureError(f"{digest}: SBOM describes image {image.get('versionInfo')}, not {digest}")
    return sum(1 for p in packages if isinstance(p, dict) and p.get("SPDXID") != "SPDXRef-image")


def _purl(locator: str) -> dict[str, str]:
    return {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": locator}


def _deb_purl(package: DebPackage) -> str:
    purl = f"pkg:deb/debian/{quote(package.name)}@{quote(package.version, safe='')}"
    params = []
    if package.architecture:
        params.append(f"arch={quote(package.architecture)}")
    if package.source and package.source != package.name:
        params.append(f"upstream={quote(package.source, safe='')}")
    return purl + ("?" + "&".join(params) if params else "")


def _package_id(package: DebPackage, used: set[str]) -> str:
    stem = _SPDXID_CHARS.sub("-", f"{package.name}-{package.architecture}").strip("-")
    suffix = hashlib.sha256(f"{package.name}\0{package.version}\0{package.architecture}".encode()).hexdigest()[:8]
    spdx_id = f"SPDXRef-deb-{stem}-{suffix}"
    used.add(spdx_id)
    return spdx_id


def _supplier(maintainer: str) -> str:
    """SPDX writes ``Name (email)`` where Debian writes ``Name <email>``."""
    match = re.match(r"^\s*(.*?)\s*<([^>]*)>\s*$", maintainer)
    return f"{match.group(1)} ({match.group(2)})" if match else maintainer.strip()
