"""Hostile single-layer images through the whole `pkgtool image build` pipeline (from a
cache, no registry): each defect an audit found is one clean line naming the image and the
entry or layer, with nothing written, or is handled, never a Python traceback."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import imagekit
import pytest

from pkgtool.assemble.image_build import build_image
from pkgtool.errors import PkgtoolError
from pkgtool.jsonio import hashed_json
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.layout import Layout

REPO = "127.0.0.1:5000/hostile"


def _layer(info: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def _yaml(tmp_path: Path, ref: str) -> Path:
    yml = tmp_path / "hostile.yml"
    yml.write_text(f"onboot:\n  - name: bad\n    image: {ref}\n")
    return yml


def _build(tmp_path: Path, ref: str) -> Path:
    out = tmp_path / "out"
    build_image([_yaml(tmp_path, ref)], formats=["tar"], arch="amd64", out_dir=out, cache=tmp_path / "cache")
    return out


def _nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_a_path_5000_directories_deep_is_one_line_naming_image_and_entry(tmp_path: Path) -> None:
    deep = "/".join(["d"] * 5000) + "/f"
    ref = imagekit.store_image(Layout(tmp_path / "cache"), f"{REPO}/deep", [_layer(tarfile.TarInfo(deep))], arch="amd64")
    with pytest.raises(PkgtoolError) as caught:
        _build(tmp_path, ref)
    message = str(caught.value)
    assert message.startswith(f"{ref}: layer 1: entry 'd/d/d/") and "path longer than 4096 bytes" in message
    assert "\n" not in message
    _nothing_written(tmp_path)


@pytest.mark.parametrize("mtime", ["nan", "inf", "1e300", "-1e300", "99999999999999999999"])
def test_absurd_pax_mtimes_are_clamped_and_the_build_succeeds(tmp_path: Path, mtime: str) -> None:
    info = tarfile.TarInfo("etc/odd")
    info.pax_headers = {"mtime": mtime}
    ref = imagekit.store_image(Layout(tmp_path / "cache"), f"{REPO}/mtime", [_layer(info)], arch="amd64")
    out = _build(tmp_path, ref)
    with tarfile.open(out / "hostile.tar") as tf:
        member = tf.getmember("containers/onboot/000-bad/lower/etc/odd")
        assert member.mtime == 0 and tf.extractfile(member).read() == b"x"  # type: ignore[union-attr]


def test_a_layer_that_does_not_match_its_diff_id_is_refused_before_any_output(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "cache")
    layout.ensure()
    layer = _layer(tarfile.TarInfo("bin/tool"), b"the real content")
    claimed = "sha256:" + "ab" * 32  # what the config says the uncompressed layer hashes to
    layout.write_blob(layer)
    config = hashed_json({"architecture": "amd64", "os": "linux", "config": {},
                          "rootfs": {"type": "layers", "diff_ids": [claimed]}})
    layout.write_blob(config)
    layer_desc = Descriptor.for_bytes(mediatypes.OCI_LAYER_GZIP, layer)
    manifest = hashed_json({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                            "config": Descriptor.for_bytes(mediatypes.OCI_CONFIG, config).to_json(),
                            "layers": [layer_desc.to_json()]})
    layout.write_blob(manifest)
    descriptor = Descriptor.for_bytes(mediatypes.OCI_MANIFEST, manifest)
    ref = f"{REPO}/forged@{descriptor.digest}"
    layout.tag(ref, descriptor)
    with pytest.raises(PkgtoolError) as caught:
        _build(tmp_path, ref)
    assert str(caught.value) == (
        f"{ref}: layer 1 ({layer_desc.digest}): uncompressed content hashes to "
        f"sha256:{__import__('hashlib').sha256(gzip.decompress(layer)).hexdigest()}, "
        f"not the diff_id {claimed} its image config names"
    )
    _nothing_written(tmp_path)


def test_the_cli_reports_a_hostile_image_in_one_line(tmp_path: Path) -> None:
    deep = "/".join(["d"] * 5000) + "/f"
    ref = imagekit.store_image(Layout(tmp_path / "cache"), f"{REPO}/deep", [_layer(tarfile.TarInfo(deep))], arch="amd64")
    done = subprocess.run(
        [sys.executable, "-m", "pkgtool", "--cache-dir", str(tmp_path / "cache"), "image", "build",
         str(_yaml(tmp_path, ref)), "--format", "tar", "--dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("pkgtool: error:")]
    assert errors == [done.stderr.splitlines()[-1]] and errors[0].startswith(f"pkgtool: error: {ref}: layer 1: entry")
