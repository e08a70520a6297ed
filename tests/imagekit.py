"""Test helpers for image builds: synthetic OCI images, Debian kernels and busybox per arch.

Kernels and busybox come from Debian packages fetched with ``apt-get download`` and cached
under ``$PKGTOOL_TEST_CACHE`` (default ``/var/cache/pkgtool-test``), so a fresh CI machine
fetches them once by itself.  Needs ``dpkg --add-architecture arm64 s390x`` and an
``apt-get update`` for the foreign arches.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

from pkgtool.jsonio import hashed_json
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.oci.layout import Layout

CACHE = Path(os.environ.get("PKGTOOL_TEST_CACHE", "/var/cache/pkgtool-test"))
DEB_ARCH = {"amd64": "amd64", "arm64": "arm64", "s390x": "s390x"}

# (name, kind, payload, mode): kind file|dir|symlink|chr
Member = tuple[str, str, object, int]


def layer_tar(members: Sequence[Member]) -> bytes:
    """A gzip'd layer with fixed metadata, so the same members give the same digest."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload, mode in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode, info.uname, info.gname = 1700000000, mode, "", ""
            data = None
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size, data = len(payload), io.BytesIO(payload)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = payload  # type: ignore[misc]
            tf.addfile(info, data)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def image_blobs(layers: Sequence[bytes], *, arch: str, config: dict[str, object] | None = None) -> tuple[dict[str, bytes], Descriptor]:
    """Blobs (digest -> bytes) of a one-platform OCI index over ``layers``; returns the index descriptor."""
    import hashlib

    blobs: dict[str, bytes] = {}
    diff_ids = []
    layer_descs = []
    for data in layers:
        desc = Descriptor.for_bytes(mediatypes.OCI_LAYER_GZIP, data)
        blobs[desc.digest] = data
        layer_descs.append(desc.to_json())
        diff_ids.append("sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest())
    cfg = {
        "architecture": arch, "os": "linux",
        "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cfg_bytes = hashed_json(cfg)
    cfg_desc = Descriptor.for_bytes(mediatypes.OCI_CONFIG, cfg_bytes)
    blobs[cfg_desc.digest] = cfg_bytes
    manifest = hashed_json({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST, "config": cfg_desc.to_json(), "layers": layer_descs})
    man_desc = Descriptor.for_bytes(mediatypes.OCI_MANIFEST, manifest, platform=Platform("linux", arch))
    blobs[man_desc.digest] = manifest
    index = hashed_json({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [man_desc.to_json()]})
    idx_desc = Descriptor.for_bytes(mediatypes.OCI_INDEX, index)
    blobs[idx_desc.digest] = index
    return blobs, idx_desc


def store_image(layout: Layout, name: str, layers: Sequence[bytes], *, arch: str, config: dict[str, object] | None = None) -> str:
    """Put an image into a cache layout; returns its pinned reference ``name@sha256:…``."""
    layout.ensure()
    blobs, index = image_blobs(layers, arch=arch, config=config)
    for digest, data in blobs.items():
        layout.write_blob(data, expected_digest=digest)
    layout.tag(f"{name}@{index.digest}", index)
    return f"{name}@{index.digest}"


# --------------------------------------------------------------------------- Debian packages

def _download(package: str, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    base = package.split(":")[0]
    arch = package.split(":")[1] if ":" in package else "amd64"
    found = sorted(directory.glob(f"{base}_*_{arch}.deb"))
    if not found:
        subprocess.run(["apt-get", "download", package], cwd=directory, check=True, capture_output=True)
        found = sorted(directory.glob(f"{base}_*_{arch}.deb"))
    if not found:
        raise FileNotFoundError(f"apt-get download {package} gave no .deb")
    return found[-1]


def _extract(deb: Path, pattern: str, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "--wildcards", pattern], input=tar, cwd=dest, check=False, capture_output=True)
    return sorted(dest.glob(pattern.lstrip("./")))


def kernel_package(arch: str) -> str:
    meta = "linux-image-amd64" if arch == "amd64" else f"linux-image-{arch}:{arch}"
    out = subprocess.run(["apt-cache", "depends", meta], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Depends: (linux-image-[0-9][^\s:]*)", out)
    if not match:
        raise FileNotFoundError(f"cannot resolve the kernel ABI from `apt-cache depends {meta}`")
    return match.group(1) + ("" if arch == "amd64" else f":{arch}")


VIRT_KERNEL_YML = Path(__file__).resolve().parents[1] / "kernel" / "bookworm-6.1-virt" / "kernel.yml"


def shipped_kernel(arch: str) -> Path:
    """Debian's kernel for ``arch`` in the form the VM flavour ships it (kernel.yml's
    ``compress:``, e.g. the arm64 Image gzip'd): what the boot tests must boot."""
    from pkgtool.kernel.kernel_form import compressed
    from pkgtool.kernel.kernel_yml import load_kernel_spec

    source = kernel(arch)
    form = load_kernel_spec(VIRT_KERNEL_YML).arch(arch).compress
    if not form:
        return source
    # Beside boot/, not in it: kernel() takes the last boot/vmlinuz-* it finds.
    target = CACHE / "kernels" / arch / "shipped" / f"{source.name}.{form}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(compressed(source.read_bytes(), form))
        partial.replace(target)
    return target


def kernel(arch: str) -> Path:
    """A Debian kernel binary for ``arch`` (``boot/vmlinuz-*``), fetched and cached."""
    if env := os.environ.get(f"PKGTOOL_TEST_KERNEL_{arch.upper()}"):
        return Path(env)
    done = CACHE / "kernels" / arch
    found = sorted(done.glob("boot/vmlinuz-*"))
    if found:
        return found[-1]
    deb = _download(kernel_package(arch), CACHE / "debs")
    found = _extract(deb, "./boot/vmlinuz-*", done)
    if not found:
        raise FileNotFoundError(f"no boot/vmlinuz-* in {deb}")
    return found[-1]


def busybox(arch: str) -> Path:
    """A static busybox for ``arch``, fetched and cached."""
    target = CACHE / "busybox" / arch / "bin" / "busybox"
    if target.exists():
        return target
    deb = _download(f"busybox-static:{DEB_ARCH[arch]}", CACHE / "debs")
    _extract(deb, "./bin/busybox", target.parent.parent)
    if not target.exists():
        raise FileNotFoundError(f"no bin/busybox in {deb}")
    return target


def config_json(tree_bytes: bytes) -> dict[str, object]:
    data = json.loads(tree_bytes)
    assert isinstance(data, dict)
    return data


INIT_SCRIPT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
for d in /containers/onboot/*; do
  root="$d/rootfs"; [ -d "$d/lower" ] && root="$d/lower"
  /bin/busybox chroot "$root" /bin/busybox sh /run.sh
done
[ -e /lib/modules/pkgtool-test/modules.order ] && /bin/busybox echo KERNEL-TAR-UNPACKED
/bin/busybox poweroff -f
"""


def busybox_layer(arch: str, extra: Sequence[Member] = ()) -> bytes:
    return layer_tar([("bin", "dir", None, 0o755), ("bin/busybox", "file", busybox(arch).read_bytes(), 0o755), *extra])


def minimal_yaml(layout: Layout, arch: str, *, marker: str, repo: str = "127.0.0.1:5000/pkgtool-test") -> str:
    """Store a kernel, an init and an onboot image in ``layout``; the YAML that boots them.

    The init runs each onboot bundle's ``/run.sh`` in a chroot of its rootfs (a stand-in
    for runc) and powers off; the onboot container prints ``marker``.  The kernel is in the
    form the VM flavour ships it (:func:`shipped_kernel`).
    """
    kernel_tar = layer_tar([("lib/modules/pkgtool-test/modules.order", "file", b"", 0o644)])
    with gzip.GzipFile(fileobj=io.BytesIO(kernel_tar)) as gz:
        plain_kernel_tar = gz.read()
    kernel_ref = store_image(layout, f"{repo}/kernel", [layer_tar([
        ("kernel", "file", shipped_kernel(arch).read_bytes(), 0o644),
        ("kernel.tar", "file", plain_kernel_tar, 0o644),
    ])], arch=arch)
    init_ref = store_image(layout, f"{repo}/init", [busybox_layer(arch, [("init", "file", INIT_SCRIPT.encode(), 0o755)])], arch=arch)
    onboot_ref = store_image(layout, f"{repo}/marker", [busybox_layer(arch, [
        ("run.sh", "file", f"echo {marker}\n".encode(), 0o755),
    ])], arch=arch, config={"Cmd": ["/bin/busybox", "sh", "/run.sh"]})
    console = {"amd64": "ttyS0", "arm64": "ttyAMA0", "s390x": "ttysclp0"}[arch]
    return (
        f"kernel:\n  image: {kernel_ref}\n  cmdline: \"console={console} panic=-1\"\n"
        f"init:\n  - {init_ref}\n"
        f"onboot:\n  - name: marker\n    image: {onboot_ref}\n"
    )


def push_image(registry: str, repository: str, tag: str, layers: Sequence[bytes], *, arch: str,
               config: dict[str, object] | None = None) -> str:
    """Push a one-platform image (an OCI index over one manifest) to ``registry``; returns
    ``REGISTRY/REPOSITORY:TAG``.  Blobs first, then the manifest by digest, then the index."""
    from pkgtool.oci.registry import RegistryClient

    blobs, index = image_blobs(layers, arch=arch, config=config)
    manifests = {index.digest}
    index_doc = json.loads(blobs[index.digest])
    manifests |= {m["digest"] for m in index_doc["manifests"]}
    with RegistryClient(registry) as client:
        for digest, data in blobs.items():
            if digest not in manifests:
                client.push_blob_bytes(repository, data)
        for entry in index_doc["manifests"]:
            client.put_manifest(repository, entry["digest"], blobs[entry["digest"]], mediatypes.OCI_MANIFEST)
        client.put_manifest(repository, tag, blobs[index.digest], mediatypes.OCI_INDEX)
    return f"{registry}/{repository}:{tag}"


def busybox_image_layer(arch: str) -> bytes:
    """A layer with a static busybox as /bin/busybox and /bin/sh: enough for `docker run`."""
    return busybox_layer(arch, [("bin/sh", "symlink", "busybox", 0o777), ("tmp", "dir", None, 0o1777)])
