"""A tiny three-arch busybox base image in the real registry, for builds that need a FROM.

There is no Docker Hub here: BuildKit resolves ``FROM`` through a registry (for foreign
arches it never looks at the local image store), so tests push their base themselves.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import imagekit
import requests

from pkgtool.jsonio import hashed_json
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import sha256_digest

ARCHES = ("amd64", "arm64", "s390x")
TOOLS = ("sh", "uname", "sleep", "echo", "cat", "cp", "mkdir", "ln", "ls", "touch", "true", "false", "chmod")


@dataclass(frozen=True)
class Base:
    registry: str
    repository: str
    tag: str
    digest: str

    @property
    def tagged(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    def pinned(self, registry: str | None = None) -> str:
        """``REGISTRY/REPO:TAG@DIGEST``; ``registry`` may be a Dockerfile expression."""
        return f"{registry or self.registry}/{self.repository}:{self.tag}@{self.digest}"


def _push_blob(registry: str, repo: str, digest: str, data: bytes) -> None:
    base = f"http://{registry}/v2/{repo}/blobs"
    if requests.head(f"{base}/{digest}", timeout=30).status_code == 200:
        return
    resp = requests.post(f"{base}/uploads/", timeout=30)
    resp.raise_for_status()
    location = requests.compat.urljoin(f"http://{registry}/", resp.headers["Location"])
    sep = "&" if "?" in location else "?"
    requests.put(f"{location}{sep}digest={digest}", data=data, timeout=60,
                 headers={"Content-Type": "application/octet-stream"}).raise_for_status()


def _push_manifest(registry: str, repo: str, ref: str, media_type: str, data: bytes) -> None:
    requests.put(f"http://{registry}/v2/{repo}/manifests/{ref}", data=data, timeout=30,
                 headers={"Content-Type": media_type}).raise_for_status()


def push_busybox_base(registry: str, repo: str = "pkgtool-test/bk-busybox") -> Base:
    """A three-arch busybox image (static busybox from Debian, applet symlinks in /bin)."""
    manifests = []
    for arch in ARCHES:
        links = [(f"bin/{tool}", "symlink", "busybox", 0o777) for tool in TOOLS]
        layer = imagekit.busybox_layer(arch, links)
        blobs, index_desc = imagekit.image_blobs([layer], arch=arch, config={"Env": ["PATH=/bin"]})
        index = json.loads(blobs[index_desc.digest])
        man = index["manifests"][0]
        for digest, data in blobs.items():
            if digest != index_desc.digest and digest != man["digest"]:
                _push_blob(registry, repo, digest, data)
        _push_manifest(registry, repo, man["digest"], mediatypes.OCI_MANIFEST, blobs[man["digest"]])
        manifests.append(man)
    index_bytes = hashed_json({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": manifests})
    tag = hashlib.sha256(index_bytes).hexdigest()[:16]
    _push_manifest(registry, repo, tag, mediatypes.OCI_INDEX, index_bytes)
    return Base(registry, repo, tag, sha256_digest(index_bytes))
