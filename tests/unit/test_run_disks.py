"""`pkgtool run qemu --disk/--data/--data-file/--state`: spec parsing, disk creation (real
qemu-img for qcow2), the cidata ISO (real xorriso, read back with blkid and xorriso) and
one-line errors for bad input."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pkgtool.errors import UsageError
from pkgtool.run.cidata import read_data, write_cidata
from pkgtool.run.disks import DEFAULT_SIZE, DiskSpec, ensure_disk, parse_disk, parse_size


def test_disk_specs_parse_as_linuxkit_writes_them(tmp_path: Path) -> None:
    assert parse_disk("d.qcow2") == DiskSpec(Path("d.qcow2"))
    assert parse_disk("d.qcow2").driver == "qcow2" and parse_disk("d.img").driver == "raw"
    assert parse_disk("file=d.img,size=512M,format=qcow2") == DiskSpec(Path("d.img"), 512 << 20, "qcow2")
    assert parse_disk("size=2G,d.raw") == DiskSpec(Path("d.raw"), 2 << 30)
    assert parse_disk("d.qcow2,size=2", base=tmp_path) == DiskSpec(tmp_path / "d.qcow2", 2 << 30)  # GiB, as LinuxKit
    assert parse_disk("/abs/d.img", base=tmp_path).path == Path("/abs/d.img")
    assert parse_size("1T", spec="x") == 1 << 40 and parse_size("64k", spec="x") == 64 << 10
    assert parse_size("2GiB", spec="x") == 2 << 30


@pytest.mark.parametrize(("spec", "message"), [
    ("", "expected FILE"),
    ("size=2G", "no FILE"),
    ("a,b", "expected FILE"),
    ("d.img,size=lots", "is not a size"),
    ("d.img,size=0", "is not a size"),
    ("d.img,colour=red", "unexpected 'colour=red'"),
    ("d.img,size=1G,size=2G", "unexpected 'size=2G'"),
    ("d.img,format=q;cow", "unexpected 'format=q;cow'"),
])
def test_malformed_disk_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        parse_disk(spec)
    assert "\n" not in str(caught.value)


def test_missing_disks_are_made_empty_and_atomically(tmp_path: Path) -> None:
    raw = ensure_disk(parse_disk("a.img,size=3M", base=tmp_path / "state"))
    assert raw.path.stat().st_size == 3 << 20 and raw.path.read_bytes() == bytes(3 << 20)
    assert raw.path.stat().st_blocks == 0  # sparse
    default = ensure_disk(parse_disk("b.raw", base=tmp_path))
    assert default.path.stat().st_size == DEFAULT_SIZE
    qcow = ensure_disk(parse_disk("c.qcow2,size=2G", base=tmp_path))
    info = subprocess.run(["qemu-img", "info", "--output=json", str(qcow.path)], capture_output=True, text=True, check=True)
    assert '"virtual-size": 2147483648' in info.stdout and '"format": "qcow2"' in info.stdout
    # An existing disk is used as it is, never resized or rewritten.
    raw.path.write_bytes(b"data")
    assert ensure_disk(parse_disk("a.img,size=9G", base=tmp_path / "state")).path.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.img", "b.raw", "c.qcow2", "state"]
    with pytest.raises(UsageError, match="only raw or qcow2 disks are created"):
        ensure_disk(parse_disk("d.vmdk", base=tmp_path))


def test_data_comes_from_one_place_and_a_missing_file_is_one_line(tmp_path: Path) -> None:
    assert read_data(data=None, data_file=None) is None
    assert read_data(data='{"a": 1}', data_file=None) == b'{"a": 1}'
    (tmp_path / "ud").write_bytes(b"\x00binary")
    assert read_data(data=None, data_file=str(tmp_path / "ud")) == b"\x00binary"
    with pytest.raises(UsageError, match=r"--data-file .*/nope: no such file"):
        read_data(data=None, data_file=str(tmp_path / "nope"))
    with pytest.raises(UsageError, match="is a directory"):
        read_data(data=None, data_file=str(tmp_path))
    with pytest.raises(UsageError, match="exclusive"):
        read_data(data="x", data_file=str(tmp_path / "ud"))


def test_the_cidata_iso_is_reproducible_and_labelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = write_cidata(b'{"k": {"content": "v"}}', tmp_path / "one" / "data.iso")
    second = write_cidata(b'{"k": {"content": "v"}}', tmp_path / "two" / "data.iso")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    assert sorted(os.listdir(tmp_path / "one")) == ["data.iso"]  # no scratch left beside it
    probe = subprocess.run(["blkid", "-p", "-o", "export", str(first)], capture_output=True, text=True, check=True).stdout
    assert "LABEL=cidata" in probe and "TYPE=iso9660" in probe
    listing = subprocess.run(["xorriso", "-indev", str(first), "-find", "/", "-type", "f"], capture_output=True,
                             text=True, check=True).stdout
    assert "'/user-data'" in listing and "'/meta-data'" in listing
    extracted = tmp_path / "user-data"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(first), "-extract", "/user-data", str(extracted)],
                   capture_output=True, check=True)
    assert extracted.read_bytes() == b'{"k": {"content": "v"}}'


def test_the_cli_refuses_bad_input_before_making_anything(tmp_path: Path) -> None:
    for name in ("m-kernel", "m-initrd.img"):
        (tmp_path / name).write_bytes(b"x")
    state = tmp_path / "state"
    for args, message in (
        (["--disk", "d.img,size=big"], "is not a size"),
        (["--data-file", str(tmp_path / "missing.json")], "no such file"),
        (["--disk", "d.img", "--disk", "./d.img"], "named twice"),
    ):
        proc = subprocess.run([sys.executable, "-m", "pkgtool", "run", "qemu", str(tmp_path / "m"), "--state", str(state),
                               *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not state.exists()
