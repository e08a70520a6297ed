"""Test helpers for signing: multi-arch synthetic images with Debian metadata, pushed for real.

The images look like this repository's ``FROM scratch`` packages: files copied out of
Debian packages plus a ``var/lib/dpkg/status.d/<name>`` paragraph for each, and a second
layer that removes one package again (a whiteout) and adds another.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagekit import Member, layer_tar

from pkgtool.jsonio import hashed_json
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.oci.registry import RegistryClient
from pkgtool.sign import keys
from pkgtool.sign.intoto import make_layout
from pkgtool.sign.signer import KeySigner
from pkgtool.sign.verifiers import KeyVerifier

DEP5_LIBC = b"""Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: glibc

Files: *
Copyright: 1991-2023 Free Software Foundation, Inc.
License: LGPL-2.1+

Files: debian/*
Copyright: 1998 Joel Klecker
License: GPL-2+

License: LGPL-2.1+
 This library is free software; you can redistribute it and/or
 modify it under the terms of the GNU Lesser General Public License.
"""

DEP5_ZLIB = b"""Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 1995-2022 Jean-loup Gailly and Mark Adler
License: Zlib

Files: contrib/*
Copyright: someone
License: Custom-Thing
"""


def status(name: str, version: str, arch: str, *, source: str | None = None) -> bytes:
    text = f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: Debian Team <team@debian.org>\n"
    if source:
        text += f"Source: {source}\n"
    text += f"Description: {name}\n the {name} package\n .\n second paragraph\n"
    return text.encode()


def debian_layers(arch: str) -> list[bytes]:
    first: list[Member] = [
        ("var", "dir", None, 0o755), ("var/lib", "dir", None, 0o755), ("var/lib/dpkg", "dir", None, 0o755),
        ("var/lib/dpkg/status.d", "dir", None, 0o755),
        ("var/lib/dpkg/status.d/libc6", "file", status("libc6", "2.36-9+deb12u4", arch, source="glibc"), 0o644),
        ("var/lib/dpkg/status.d/busybox", "file", status("busybox", "1:1.35.0-4+b3", arch), 0o644),
        ("var/lib/dpkg/status.d/gone", "file", status("gone", "1.0", arch), 0o644),
        ("usr/share/doc/libc6/copyright", "file", DEP5_LIBC, 0o644),
        ("usr/share/doc/busybox/copyright", "file", b"Free text, not DEP-5.\n", 0o644),
        ("bin/busybox", "file", f"binary for {arch}".encode(), 0o755),
    ]
    second: list[Member] = [
        ("var/lib/dpkg/status.d/.wh.gone", "file", b"", 0o644),
        ("var/lib/dpkg/status.d/zlib1g", "file", status("zlib1g", "1:1.2.13.dfsg-1", arch, source="zlib"), 0o644),
        ("usr/share/doc/zlib1g/copyright", "file", DEP5_ZLIB, 0o644),
    ]
    return [layer_tar(first), layer_tar(second)]


@dataclass(frozen=True)
class PushedImage:
    repository: str
    tag: str
    index: Descriptor
    manifests: dict[str, Descriptor]  # arch -> descriptor (with platform)

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


def push_image(
    client: RegistryClient,
    repository: str,
    *,
    tag: str = "v1",
    arches: Sequence[str] = ("amd64", "arm64"),
    layers: Mapping[str, Sequence[bytes]] | None = None,
    created: str = "2024-01-02T03:04:05Z",
) -> PushedImage:
    """Push a multi-arch index (one manifest per arch) to the real registry."""
    manifests: dict[str, Descriptor] = {}
    for arch in arches:
        arch_layers = list((layers or {}).get(arch) or debian_layers(arch))
        layer_descs = []
        diff_ids = []
        for data in arch_layers:
            client.push_blob_bytes(repository, data)
            layer_descs.append(Descriptor.for_bytes(mediatypes.OCI_LAYER_GZIP, data).to_json())
            diff_ids.append("sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest())
        config = hashed_json({
            "architecture": arch, "os": "linux", "created": created, "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        client.push_blob_bytes(repository, config)
        manifest = hashed_json({
            "schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
            "config": Descriptor.for_bytes(mediatypes.OCI_CONFIG, config).to_json(), "layers": layer_descs,
        })
        descriptor = Descriptor.for_bytes(mediatypes.OCI_MANIFEST, manifest, platform=Platform("linux", arch))
        client.put_manifest(repository, descriptor.digest, manifest, mediatypes.OCI_MANIFEST)
        manifests[arch] = descriptor
    index = hashed_json({
        "schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
        "manifests": [d.to_json() for d in manifests.values()],
    })
    client.put_manifest(repository, tag, index, mediatypes.OCI_INDEX)
    return PushedImage(repository, tag, Descriptor.for_bytes(mediatypes.OCI_INDEX, index), manifests)


def build_info(*, registry: str, builder: str = "https://pkgtool.dev/builders/test",
               source: str | None = "https://github.com/pkgtool/pkgtool",
               base: str | None = None, **overrides: object) -> object:
    """A BuildInfo for a synthetic package (imported lazily: it validates with pkgtool code)."""
    from pkgtool.sign.provenance import BuildInfo

    values: dict[str, object] = {
        "package": "pkg/test",
        "source_repository": source,
        "source_revision": "0123456789abcdef0123456789abcdef01234567" if source else None,
        "build_config_digest": "sha256:" + "ab" * 32,
        "content_hash": "c0ffee" * 6 + "c0ff",
        "platforms": ("linux/amd64", "linux/arm64"),
        "build_args": {"DEBIAN_SUITE": "bookworm"},
        "base_images": {base or f"{registry}/pkgtool/base:abc": "sha256:" + "ba" * 32},
        "materials": {"pkg/test/build.yml": "ab" * 32, "pkg/test/Dockerfile": "cd" * 32},
        "builder_id": builder,
        "invocation_id": "test-run-1",
        "started_on": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "finished_on": datetime.datetime(2024, 1, 2, 3, 9, 0, tzinfo=datetime.UTC),
    }
    values.update(overrides)
    return BuildInfo(**values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- trust

PASSWORD = "correct horse battery staple"


@dataclass
class Trust:
    """A release key (as files), a layout owner key, a root layout and a policy, in a tmp dir."""

    directory: Path
    key: keys.PrivateKey
    key_path: Path
    pub_path: Path
    policy_path: Path

    @property
    def signer(self) -> KeySigner:
        return KeySigner(self.key)

    @property
    def verifier(self) -> KeyVerifier:
        return KeyVerifier([self.key.public_key()])


def make_trust(directory: Path, registry: str, *, layout_expires: datetime.datetime | None = None,
               functionary: keys.PrivateKey | None = None, extra_policy: str = "") -> Trust:
    directory.mkdir(parents=True, exist_ok=True)
    key = keys.generate_keypair()
    key_path, pub_path = keys.write_keypair(directory / "release", key, PASSWORD.encode(), force=True)
    owner = keys.generate_keypair()
    (directory / "layout.pub").write_bytes(keys.public_key_pem(owner))
    expires = layout_expires or datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=7)
    (directory / "root.layout").write_bytes(make_layout(
        layout_key=owner, functionaries=[(functionary or key).public_key()], expires=expires,
    ))
    policy = directory / "policy.yml"
    policy.write_text(
        "version: 1\n"
        "keys: [release.pub]\n"
        "builders: [https://pkgtool.dev/builders/test]\n"
        "source_repositories: [https://github.com/pkgtool/pkgtool]\n"
        "require_revision: true\n"
        f"base_images: ['{registry}/pkgtool/*']\n"
        "require:\n  signatures: [bundle, cosign]\n  attestations: [slsa-provenance, spdx]\n"
        "in_toto:\n  layout: root.layout\n  keys: [layout.pub]\n  require: always\n"
        + extra_policy
    )
    return Trust(directory, key, key_path, pub_path, policy)
