"""The reproducible re-pack of a rootfs tar into an OCI image (shared by base and kernel)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

from pkgtool import rootfs_image
from pkgtool.oci import mediatypes


def _rootfs(path: Path, *, mtime: int) -> None:
    with tarfile.open(path, "w") as tf:
        for name, kind in (("./", tarfile.DIRTYPE), ("./dev/", tarfile.DIRTYPE), ("./dev/null", tarfile.CHRTYPE),
                           ("./bin/", tarfile.DIRTYPE), ("./bin/sh", tarfile.REGTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.uname = kind, mtime, "someone"
            data = b"#!shell" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)


def test_repack_is_deterministic_clamped_and_drops_dev_nodes(tmp_path: Path) -> None:
    config = rootfs_image.ImageConfig(env=("PATH=/bin",), cmd=("/bin/sh",), epoch=1000, labels={"a": "b"})
    images = []
    for i, mtime in enumerate((5000, 9000)):  # later mtimes are clamped to the epoch
        src = tmp_path / f"in{i}.tar"
        _rootfs(src, mtime=mtime)
        images.append(rootfs_image.image_from_rootfs_tar(
            src, arch="arm64", config=config, workdir=tmp_path / f"w{i}", drop=rootfs_image.drop_device_nodes))
    a, b = images
    assert a.layer == b.layer and a.manifest == b.manifest and a.config == b.config
    assert a.layer_path.read_bytes() == b.layer_path.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(a.layer_path.read_bytes()))) as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == ["dev", "bin", "bin/sh"]
    assert all(m.mtime == 1000 and m.uname == "" for m in members)
    cfg = json.loads(a.config)
    assert cfg["architecture"] == "arm64" and cfg["created"] == "1970-01-01T00:16:40Z"
    assert cfg["config"] == {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "Labels": {"a": "b"}}
    manifest = json.loads(a.manifest)
    assert manifest["layers"][0]["digest"] == a.layer.digest
    assert manifest["layers"][0]["mediaType"] == mediatypes.OCI_LAYER_GZIP


def test_index_orders_arches(tmp_path: Path) -> None:
    src = tmp_path / "in.tar"
    _rootfs(src, mtime=1)
    config = rootfs_image.ImageConfig(epoch=1)
    images = [rootfs_image.image_from_rootfs_tar(src, arch=arch, config=config, workdir=tmp_path / arch)
              for arch in ("s390x", "amd64", "arm64")]
    index = json.loads(rootfs_image.build_index(images))
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64", "s390x"]
    assert index["mediaType"] == mediatypes.OCI_INDEX
