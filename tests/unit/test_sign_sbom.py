"""SBOM inputs and output: dpkg status parsing, DEP-5 licenses, streamed layers, SPDX 2.3."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import signkit
import zstandard
from imagekit import layer_tar
from ocikit import REF, MemorySource

from pkgtool.errors import CacheError, PkgtoolError
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.oci.layer import Layer
from pkgtool.oci.layout import Layout
from pkgtool.sign import dpkg, imagefiles, sbom

DIGEST = "sha256:" + "4e" * 32


def _layers(*datas: bytes, media_type: str = mediatypes.OCI_LAYER_GZIP) -> list[Layer]:
    source = MemorySource()
    descriptors = [source.add(d, media_type) for d in datas]
    return Layer.of_image(source, REF, descriptors, None, image="img")


# --------------------------------------------------------------------------- dpkg


def test_status_file_keeps_only_installed_packages() -> None:
    data = (
        b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nArchitecture: amd64\n"
        b"Source: glibc (2.36-9+b1)\nDescription: C library\n libc\n .\n more\n\n"
        b"Package: removed\nStatus: deinstall ok config-files\nVersion: 1.0\n\n"
        b"Package: half\nStatus: install reinstreq half-installed\nVersion: 1.0\n\n"
        b"Package: noversion\nStatus: install ok installed\n"
    )
    (package,) = dpkg.parse_status(data, require_installed=True)
    assert (package.name, package.version, package.architecture) == ("libc6", "2.36-9", "amd64")
    assert (package.source, package.source_version) == ("glibc", "2.36-9+b1")


def test_status_d_entries_need_no_status_field() -> None:
    (package,) = dpkg.parse_status(signkit.status("zlib1g", "1:1.2.13", "arm64", source="zlib"),
                                   require_installed=False)
    assert (package.name, package.source, package.source_version) == ("zlib1g", "zlib", "1:1.2.13")
    assert dpkg.parse_status(b"Package: x\nStatus: purge ok not-installed\nVersion: 1\n", require_installed=False) == []


def test_continuation_lines_and_garbage() -> None:
    (fields,) = dpkg.paragraphs("A: 1\nB: two\n line\n .\n end\nnot a field line\nC: 3\n")
    assert fields == {"A": "1", "B": "two\nline\n\nend", "C": "3"}


def test_dep5_licenses_map_to_spdx() -> None:
    info = dpkg.copyright_licenses(signkit.DEP5_LIBC, package="libc6")
    assert info is not None
    assert info.expression == "GPL-2.0-or-later AND LGPL-2.1-or-later"
    assert info.extracted == ()


def test_unknown_dep5_license_becomes_a_license_ref_with_text() -> None:
    text = (b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            b"Files: *\nLicense: GPL-2+ or Weird-1\n\nLicense: Weird-1\n The weird license text.\n")
    info = dpkg.copyright_licenses(text, package="p")
    assert info is not None
    assert info.expression == "GPL-2.0-or-later OR LicenseRef-Weird-1"
    assert info.extracted == (("LicenseRef-Weird-1", "Weird-1", "The weird license text."),)


def test_dep5_exceptions_and_malformed_expressions_are_opaque() -> None:
    head = b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\n"
    with_exception = dpkg.copyright_licenses(head + b"License: GPL-2+ with OpenSSL exception\n", package="p")
    assert with_exception is not None and with_exception.expression == "LicenseRef-GPL-2-with-OpenSSL-exception"
    dangling = dpkg.copyright_licenses(head + b"License: GPL-2 or\n", package="p")
    assert dangling is not None and dangling.expression == "LicenseRef-GPL-2-or"


def test_free_text_copyright_is_not_guessed() -> None:
    assert dpkg.copyright_licenses(b"This package is GPL, trust me.\n", package="p") is None


# --------------------------------------------------------------------------- layers


def test_layers_apply_whiteouts_opaque_dirs_and_replacements() -> None:
    lower = layer_tar([
        ("var/lib/dpkg/status.d/a", "file", b"A1", 0o644),
        ("var/lib/dpkg/status.d/b", "file", b"B", 0o644),
        ("usr/share/doc/c/copyright", "file", b"C", 0o644),
        ("usr/share/doc/d/copyright", "file", b"D", 0o644),
        ("etc/x/status.d/ignored", "file", b"no", 0o644),
    ])
    upper = layer_tar([
        ("var/lib/dpkg/status.d/.wh.b", "file", b"", 0o644),  # delete b
        ("var/lib/dpkg/status.d/a", "file", b"A2", 0o644),  # replace a
        ("usr/share/doc/c", "symlink", "/elsewhere", 0o777),  # a symlink hides the directory
        ("usr/share/doc/e/copyright", "file", b"E", 0o644),
    ])
    top = layer_tar([
        ("usr/share/doc/.wh..wh..opq", "file", b"", 0o644),  # opaque: lower docs are gone
        ("usr/share/doc/f/copyright", "file", b"F", 0o644),
    ])
    files = imagefiles.read_files(_layers(lower, upper, top), wanted=sbom.wanted)
    assert files == {"var/lib/dpkg/status.d/a": b"A2", "usr/share/doc/f/copyright": b"F"}
    # Entries of one layer never hide each other: a whiteout and a new file side by side.
    files = imagefiles.read_files(_layers(lower, upper), wanted=sbom.wanted)
    assert files == {"var/lib/dpkg/status.d/a": b"A2", "usr/share/doc/d/copyright": b"D",
                     "usr/share/doc/e/copyright": b"E"}


def test_layers_of_every_compression() -> None:
    raw = gzip.decompress(layer_tar([("var/lib/dpkg/status", "file", b"S", 0o644)]))
    for data, media_type in (
        (raw, mediatypes.OCI_LAYER),
        (zstandard.ZstdCompressor().compress(raw), mediatypes.OCI_LAYER_ZSTD),
    ):
        assert imagefiles.read_files(_layers(data, media_type=media_type), wanted=sbom.wanted) == {
            "var/lib/dpkg/status": b"S"
        }


def test_hard_link_to_a_wanted_file() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        info = tarfile.TarInfo("var/lib/dpkg/status.d/a")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"A"))
        link = tarfile.TarInfo("var/lib/dpkg/status.d/b")
        link.type, link.linkname = tarfile.LNKTYPE, "var/lib/dpkg/status.d/a"
        tf.addfile(link)
    files = imagefiles.read_files(_layers(buffer.getvalue(), media_type=mediatypes.OCI_LAYER), wanted=sbom.wanted)
    assert files == {"var/lib/dpkg/status.d/a": b"A", "var/lib/dpkg/status.d/b": b"A"}


def test_hostile_layers_are_refused() -> None:
    climbing = layer_tar([("../etc/passwd", "file", b"x", 0o644)])
    with pytest.raises(PkgtoolError, match=r"refusing path with '\.\.' component"):
        imagefiles.read_files(_layers(climbing), wanted=sbom.wanted)
    with pytest.raises(PkgtoolError, match="img: layer 1: corrupt gzip stream"):
        imagefiles.read_files(_layers(b"\x1f\x8bnot gzip at all"), wanted=sbom.wanted)
    with pytest.raises(PkgtoolError, match="unsupported media type"):
        imagefiles.read_files(_layers(b"x", media_type="application/octet-stream"), wanted=sbom.wanted)


def test_layer_from_the_cache_is_digest_checked(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "cache")
    layout.ensure()
    data = layer_tar([("var/lib/dpkg/status", "file", b"S", 0o644)])
    digest = layout.write_blob(data)
    descriptor = Descriptor(mediatypes.OCI_LAYER_GZIP, digest, len(data))

    layers = [Layer(descriptor, layout, REF, what="img: layer 1")]
    assert imagefiles.read_files(layers, wanted=sbom.wanted) == {"var/lib/dpkg/status": b"S"}
    # Corrupt the stored blob (same length, valid gzip): the read must fail, not use it.
    other = layer_tar([("var/lib/dpkg/status", "file", b"T", 0o644)])
    assert len(other) == len(data)
    path = layout.blob_path(digest)
    path.chmod(0o644)
    path.write_bytes(other)
    with pytest.raises(CacheError):
        imagefiles.read_files(layers, wanted=sbom.wanted)


# --------------------------------------------------------------------------- SPDX


def _document(arch: str = "amd64", digest: str = DIGEST, config: dict[str, Any] | None = None) -> bytes:
    layers = _layers(*signkit.debian_layers(arch))
    return sbom.image_sbom(
        repository_name="127.0.0.1:5000/pkgtool/test", manifest=Descriptor(mediatypes.OCI_MANIFEST, digest, 1),
        platform=Platform("linux", arch), layers=layers,
        config=config if config is not None else {"created": "2024-01-02T03:04:05Z"},
    )


def test_spdx_document_lists_the_packages_with_licenses() -> None:
    document = json.loads(_document())
    assert document["spdxVersion"] == "SPDX-2.3" and document["dataLicense"] == "CC0-1.0"
    assert document["SPDXID"] == "SPDXRef-DOCUMENT"
    assert document["creationInfo"] == {"created": "2024-01-02T03:04:05Z", "creators": ["Tool: pkgtool-0.1.0"]}
    packages = {p["name"]: p for p in document["packages"]}
    assert set(packages) == {"127.0.0.1:5000/pkgtool/test", "busybox", "libc6", "zlib1g"}  # "gone" was whited out
    assert packages["libc6"]["versionInfo"] == "2.36-9+deb12u4"
    assert packages["libc6"]["licenseDeclared"] == "GPL-2.0-or-later AND LGPL-2.1-or-later"
    assert packages["busybox"]["licenseDeclared"] == "NOASSERTION"  # free-text copyright
    assert packages["zlib1g"]["licenseDeclared"] == "LicenseRef-Custom-Thing AND Zlib"
    assert [e["licenseId"] for e in document["hasExtractedLicensingInfos"]] == ["LicenseRef-Custom-Thing"]
    assert packages["libc6"]["externalRefs"][0]["referenceLocator"] == (
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&upstream=glibc"
    )
    image = packages["127.0.0.1:5000/pkgtool/test"]
    assert image["SPDXID"] == "SPDXRef-image" and image["versionInfo"] == DIGEST
    described = [r for r in document["relationships"] if r["relationshipType"] == "DESCRIBES"]
    assert described == [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                          "relatedSpdxElement": "SPDXRef-image"}]
    contained = {r["relatedSpdxElement"] for r in document["relationships"] if r["relationshipType"] == "CONTAINS"}
    assert contained == {p["SPDXID"] for p in document["packages"]} - {"SPDXRef-image"}
    assert len({p["SPDXID"] for p in document["packages"]}) == len(document["packages"])


def test_spdx_document_is_deterministic_and_derived_from_the_digest() -> None:
    first, second = _document(), _document()
    assert first == second
    namespace = json.loads(first)["documentNamespace"]
    assert namespace == f"https://pkgtool.invalid/spdx/127.0.0.1:5000/pkgtool/test/sha256-{'4e' * 32}"
    other = json.loads(_document(digest="sha256:" + "5f" * 32))["documentNamespace"]
    assert other != namespace
    # No creation time in the config: the epoch, never the wall clock.
    assert json.loads(_document(config={}))["creationInfo"]["created"] == "1970-01-01T00:00:00Z"
    assert json.loads(_document(config={"created": "garbage"}))["creationInfo"]["created"] == "1970-01-01T00:00:00Z"
    assert hashlib.sha256(_document("arm64")).digest() != hashlib.sha256(first).digest()


def test_sbom_check_rejects_another_image_and_other_formats() -> None:
    from pkgtool.sign import SignatureError

    predicate = json.loads(_document())
    assert sbom.check_sbom(predicate, digest=DIGEST) == 3
    with pytest.raises(SignatureError, match="describes image"):
        sbom.check_sbom(predicate, digest="sha256:" + "00" * 32)
    with pytest.raises(SignatureError, match=r"not SPDX-2\.3"):
        sbom.check_sbom({**predicate, "spdxVersion": "SPDX-2.2"}, digest=DIGEST)
