"""Other OCI tools read (and write) what the cache holds: skopeo and umoci, for real.

A small but real image is built into the layout with pkgtool's API: a gzip tar layer, an
OCI config whose diff_ids match, a manifest, and a two-platform index.  Refs are named the
way pkgtool names them (``127.0.0.1:5000/org/img:tag``): skopeo and umoci split
``oci:DIR:REF`` at the first colon, so those work as long as DIR has none.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from pkgtool.jsonio import hashed_json
from pkgtool.oci import layout_gc
from pkgtool.oci import mediatypes as mt
from pkgtool.oci.descriptor import Descriptor, Platform, sha256_digest
from pkgtool.oci.layout import Layout

pytestmark = pytest.mark.integration

REF = "127.0.0.1:5000/org/hello:1.0"
INDEX_REF = "127.0.0.1:5000/org/hello:multi"


def run(*argv: str) -> str:
    tool = shutil.which(argv[0])
    assert tool is not None, f"{argv[0]} is not installed"
    proc = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(argv)} failed: {proc.stderr}"
    return proc.stdout


def layer_tar(message: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        etc = tarfile.TarInfo("etc")
        etc.type, etc.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(etc)
        data = message.encode()
        info = tarfile.TarInfo("etc/motd")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("motd")
        link.type, link.linkname = tarfile.SYMTYPE, "etc/motd"
        tar.addfile(link)
    return buf.getvalue()


def build_image(layout: Layout, *, arch: str, message: str) -> tuple[Descriptor, bytes, bytes]:
    """Store one real single-layer image; returns (manifest descriptor, manifest, config)."""
    tar = layer_tar(message)
    gz = gzip.compress(tar, mtime=0)
    layer = Descriptor.for_bytes(mt.OCI_LAYER_GZIP, gz)
    layout.ingest([gz[:100], gz[100:]], expected_digest=layer.digest, expected_size=layer.size)
    config = hashed_json({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]},
        "history": [{"created_by": "pkgtool test", "created": "1970-01-01T00:00:00Z"}],
    })
    layout.write_blob(config)
    manifest = hashed_json({
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": Descriptor.for_bytes(mt.OCI_CONFIG, config).to_json(),
        "layers": [layer.to_json()],
    })
    layout.write_blob(manifest)
    return Descriptor.for_bytes(mt.OCI_MANIFEST, manifest, platform=Platform("linux", arch)), manifest, config


@pytest.fixture
def populated(tmp_path: Path) -> tuple[Layout, dict[str, Descriptor]]:
    layout = Layout(tmp_path / "cache")
    layout.ensure()
    amd, _, _ = build_image(layout, arch="amd64", message="hello from amd64\n")
    arm, _, _ = build_image(layout, arch="arm64", message="hello from arm64\n")
    layout.tag(REF, amd)
    index = hashed_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                            "manifests": [amd.to_json(), arm.to_json()]})
    layout.write_blob(index)
    layout.tag(INDEX_REF, Descriptor.for_bytes(mt.OCI_INDEX, index))
    return layout, {"amd64": amd, "arm64": arm, "index": Descriptor.for_bytes(mt.OCI_INDEX, index)}


def test_skopeo_inspects_manifest_config_and_index(populated: tuple[Layout, dict[str, Descriptor]]) -> None:
    layout, descs = populated
    info = json.loads(run("skopeo", "inspect", f"oci:{layout.root}:{REF}"))
    assert info["Digest"] == descs["amd64"].digest
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert len(info["Layers"]) == 1

    raw = run("skopeo", "inspect", "--raw", f"oci:{layout.root}:{REF}")
    assert raw.encode() == layout.read_blob(descs["amd64"].digest)
    config = json.loads(run("skopeo", "inspect", "--config", f"oci:{layout.root}:{REF}"))
    assert config["config"]["Cmd"] == ["/bin/sh"]

    raw_index = json.loads(run("skopeo", "inspect", "--raw", f"oci:{layout.root}:{INDEX_REF}"))
    assert [m["digest"] for m in raw_index["manifests"]] == [descs["amd64"].digest, descs["arm64"].digest]
    arm = json.loads(run("skopeo", "--override-arch", "arm64", "inspect", f"oci:{layout.root}:{INDEX_REF}"))
    # skopeo reports the digest of what the ref names (the index) and the picked image's config.
    assert arm["Digest"] == descs["index"].digest and arm["Architecture"] == "arm64"


def test_umoci_lists_stats_and_unpacks(populated: tuple[Layout, dict[str, Descriptor]], tmp_path: Path) -> None:
    layout, _ = populated
    assert sorted(run("umoci", "ls", "--layout", str(layout.root)).split()) == sorted([REF, INDEX_REF])
    stat = json.loads(run("umoci", "stat", "--json", "--image", f"{layout.root}:{REF}"))
    assert stat["history"][0]["created_by"] == "pkgtool test"

    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--rootless", "--image", f"{layout.root}:{REF}", str(bundle))
    assert (bundle / "rootfs" / "etc" / "motd").read_text() == "hello from amd64\n"
    assert (bundle / "rootfs" / "motd").readlink() == Path("etc/motd")
    assert json.loads((bundle / "config.json").read_text())["process"]["args"] == ["/bin/sh"]


def test_umoci_gc_accepts_our_extra_files_and_keeps_our_refs(populated: tuple[Layout, dict[str, Descriptor]]) -> None:
    layout, _ = populated
    orphan = layout.write_blob(b"unreferenced")
    run("umoci", "gc", "--layout", str(layout.root))
    assert not layout.has_blob(orphan)
    assert layout_gc.verify(layout) == []
    assert [name for name, _ in layout.list_refs()] == sorted([REF, INDEX_REF])


def test_skopeo_round_trip_through_the_registry(
    populated: tuple[Layout, dict[str, Descriptor]], registry: str, unique_repo: str, tmp_path: Path,
) -> None:
    """Push our layout with skopeo, copy it back into a fresh layout, and read that with
    our API: what another tool writes is a valid cache for us too."""
    layout, descs = populated
    remote = f"docker://{registry}/{unique_repo}:multi"
    run("skopeo", "copy", "--all", "--dest-tls-verify=false", f"oci:{layout.root}:{INDEX_REF}", remote)
    back = tmp_path / "back"
    run("skopeo", "copy", "--all", "--src-tls-verify=false", remote, f"oci:{back}:{INDEX_REF}")

    theirs = Layout(back)
    resolved = theirs.resolve(INDEX_REF)
    assert resolved is not None and resolved.digest == descs["index"].digest
    assert layout_gc.verify(theirs) == []
    assert layout_gc.size_of(theirs, resolved) == layout_gc.size_of(layout, descs["index"])
    # And we can keep writing to a layout skopeo created.
    theirs.ensure()
    theirs.tag("also", descs["amd64"])
    assert theirs.resolve("also") == descs["amd64"]
