"""The ar parser, the kernel layout builder on a synthetic .deb, sha256 refusal, bzImage."""

from __future__ import annotations

import io
import lzma
import struct
import tarfile
from pathlib import Path

import pytest
from debkit import ar_archive, deb_bytes

from pkgtool.errors import DigestMismatchError, UsageError
from pkgtool.kernel import arfile, bzimage
from pkgtool.kernel.deb_layout import KernelLayoutError, build_kernel_layout
from pkgtool.kernel.fetch import file_sha256, verify_deb
from pkgtool.kernel.kernel_build import kernel_tag
from pkgtool.kernel.kernel_yml import load_kernel_spec, parse_kernel_spec

REPO = Path(__file__).resolve().parents[2]
RELEASE = "6.1.0-99-arm64"


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


ARM64_IMAGE = b"\0" * 0x38 + b"ARMd" + b"\0" * 64


def _deb(tmp_path: Path, extra: list[tarfile.TarInfo | tuple[str, bytes]] | None = None,
         kernel: bytes = ARM64_IMAGE) -> Path:
    entries: list[tarfile.TarInfo | tuple[str, bytes]] = [
        _dir("./"), _dir("./boot/"),
        (f"./boot/System.map-{RELEASE}", b"map\n"),
        (f"./boot/config-{RELEASE}", b"CONFIG_X=y\n"),
        (f"./boot/vmlinuz-{RELEASE}", kernel),
        _dir("./lib/"), _dir("./lib/modules/"), _dir(f"./lib/modules/{RELEASE}/"),
        _dir(f"./lib/modules/{RELEASE}/kernel/"),
        (f"./lib/modules/{RELEASE}/kernel/b.ko", b"module b"),
        (f"./lib/modules/{RELEASE}/kernel/a.ko", b"module a"),
        ("./usr/share/doc/linux-image/copyright", b"GPL"),
        *(extra or []),
    ]
    path = tmp_path / "linux-image.deb"
    path.write_bytes(deb_bytes(entries))
    return path


def test_ar_parser_lists_members_and_bounds_them(tmp_path: Path) -> None:
    blob = ar_archive([("debian-binary", b"2.0\n"), ("data.tar.xz", b"abc")])
    members = list(arfile.iter_members(io.BytesIO(blob)))
    assert [(m.name, m.size) for m in members] == [("debian-binary", 4), ("data.tar.xz", 3)]
    f = io.BytesIO(blob)
    assert arfile.open_member(f, members[1]).read() == b"abc"
    with pytest.raises(arfile.ArError, match="bad magic"):
        list(arfile.iter_members(io.BytesIO(b"!<arch>X" + blob[8:])))
    with pytest.raises(arfile.ArError, match="runs past the end"):
        list(arfile.iter_members(io.BytesIO(blob[:-2])))
    with pytest.raises(arfile.ArError, match="unsupported ar member name"):
        list(arfile.iter_members(io.BytesIO(ar_archive([("#1/20", b"x")]))))


def test_layout_from_synthetic_deb_is_complete_and_deterministic(tmp_path: Path) -> None:
    deb = _deb(tmp_path)
    first = build_kernel_layout(deb, arch="arm64", epoch=1234, vmlinux=False, workdir=tmp_path / "w1")
    second = build_kernel_layout(deb, arch="arm64", epoch=1234, vmlinux=False, workdir=tmp_path / "w2")
    assert first.release == RELEASE
    assert first.files == ["System.map", "config", "kernel", "kernel.tar"]
    assert (first.root / "kernel").read_bytes() == ARM64_IMAGE
    assert (first.root / "kernel.tar").read_bytes() == (second.root / "kernel.tar").read_bytes()
    with tarfile.open(first.root / "kernel.tar") as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:3] == ["lib", "lib/modules", f"lib/modules/{RELEASE}"]
    assert f"lib/modules/{RELEASE}/kernel/a.ko" in names
    assert all(m.mtime == 1234 and m.uid == 0 and m.uname == "" for m in members)
    assert not any("doc" in n for n in names)


@pytest.mark.parametrize("bad", ["../evil", "./lib/modules/../../etc/x", "/etc/passwd"])
def test_layout_refuses_unsafe_names(tmp_path: Path, bad: str) -> None:
    with pytest.raises(KernelLayoutError, match="unsafe name"):
        build_kernel_layout(_deb(tmp_path, [(bad, b"x")]), arch="arm64", epoch=0, vmlinux=False, workdir=tmp_path / "w")


def test_layout_refuses_escaping_symlink_and_devices(tmp_path: Path) -> None:
    link = tarfile.TarInfo(f"./lib/modules/{RELEASE}/build")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../../usr/src"
    with pytest.raises(KernelLayoutError, match="leaving lib/modules"):
        build_kernel_layout(_deb(tmp_path, [link]), arch="arm64", epoch=0, vmlinux=False, workdir=tmp_path / "w")
    dev = tarfile.TarInfo(f"./lib/modules/{RELEASE}/null")
    dev.type = tarfile.CHRTYPE
    with pytest.raises(KernelLayoutError, match="only files, directories and symlinks"):
        build_kernel_layout(_deb(tmp_path, [dev]), arch="arm64", epoch=0, vmlinux=False, workdir=tmp_path / "w2")


def test_layout_refuses_wrong_kernel_kind(tmp_path: Path) -> None:
    with pytest.raises(bzimage.KernelImageError, match="expected a bzImage kernel for amd64, found arm64-Image"):
        build_kernel_layout(_deb(tmp_path), arch="amd64", epoch=0, vmlinux=False, workdir=tmp_path / "w")


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    deb = tmp_path / "x.deb"
    deb.write_bytes(b"not what was pinned")
    verify_deb(deb, sha256=file_sha256(deb), what="pkg")
    with pytest.raises(DigestMismatchError, match="refusing it"):
        verify_deb(deb, sha256="0" * 64, what="linux-image-x:amd64=1")


def _fake_bzimage(payload: bytes) -> bytes:
    setup = bytearray(2 * 512)  # setup_sects = 1
    setup[0x1F1] = 1
    setup[0x1FE:0x200] = b"\x55\xaa"
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x20F)
    struct.pack_into("<II", setup, 0x248, 16, len(payload))
    return bytes(setup) + b"\0" * 16 + payload + b"\0\0\0\0"


def test_vmlinux_is_unpacked_from_a_bzimage_xz_payload() -> None:
    elf = b"\x7fELF" + bytes(range(200))
    image = _fake_bzimage(lzma.compress(elf, format=lzma.FORMAT_XZ))
    assert bzimage.kernel_kind(image) == "bzImage"
    assert bzimage.extract_vmlinux(image) == elf
    with pytest.raises(bzimage.KernelImageError, match="not an ELF"):
        bzimage.extract_vmlinux(_fake_bzimage(lzma.compress(b"nope", format=lzma.FORMAT_XZ)))


def test_repo_kernel_spec_and_tag() -> None:
    spec = load_kernel_spec(REPO / "kernel/bookworm-6.1/kernel.yml")
    assert [a.arch for a in spec.arches] == ["amd64", "arm64", "s390x"]
    assert spec.arch("amd64").vmlinux and not spec.arch("arm64").vmlinux
    tag = kernel_tag(spec)
    assert tag.startswith(f"{spec.version}-") and len(tag.rsplit("-", 1)[1]) == 16


def _with_modules_section(section: str) -> str:
    """The repository's kernel.yml with its modules: section replaced by ``section``."""
    text = (REPO / "kernel/bookworm-6.1/kernel.yml").read_text()
    return text[:text.index("modules:\n")] + section + text[text.index("arches:\n"):]


def test_modules_exclude_is_parsed_and_part_of_the_tag() -> None:
    spec = load_kernel_spec(REPO / "kernel/bookworm-6.1/kernel.yml")
    assert "kernel/sound/*" in spec.modules_exclude
    whole = parse_kernel_spec(_with_modules_section(""), REPO / "kernel/bookworm-6.1/kernel.yml")
    assert whole.modules_exclude == () and kernel_tag(whole) != kernel_tag(spec)


@pytest.mark.parametrize(("modules", "message"), [
    ("modules: [kernel/sound/*]", r"kernel.yml:\d+: modules: expected a mapping with include and/or exclude"),
    ("modules:\n  exclude: kernel/sound/*", r"modules.exclude: expected a list of globs"),
    ("modules:\n  exclude: [/lib/x]", r"modules.exclude\[0\]: expected a glob relative to lib/modules"),
    ("modules:\n  exclude: [kernel/../../etc]", r"modules.exclude\[0\]: expected a glob relative"),
    ("modules:\n  include: kernel/fs/*", r"kernel.yml:\d+: modules.include: expected a list of globs"),
    ("modules:\n  include: []", r"kernel.yml:\d+: modules.include: an empty list would keep no module"),
    ("modules:\n  include: [x, /abs]", r"kernel.yml:\d+: modules.include\[1\]: expected a glob relative"),
    ("modules:\n  allow: [x]", r"kernel.yml:\d+: modules.allow: unknown key \(allowed: exclude, include\)"),
])
def test_bad_modules_section_is_a_file_line_error(tmp_path: Path, modules: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_kernel_spec(_with_modules_section(modules + "\n"), REPO / "kernel/bookworm-6.1/kernel.yml")


VIRT = REPO / "kernel/bookworm-6.1-virt/kernel.yml"


def test_virt_flavour_includes_modules_and_gzips_arm64() -> None:
    spec = load_kernel_spec(VIRT)
    full = load_kernel_spec(REPO / "kernel/bookworm-6.1/kernel.yml")
    assert spec.image != full.image  # one repository per flavour: tags alone could not tell them apart
    patterns = [g.pattern for g in spec.modules_include]
    assert "kernel/drivers/net/virtio_net.ko" in patterns and "kernel/fs/overlayfs/overlay.ko" in patterns
    overlay = spec.modules_include[patterns.index("kernel/fs/overlayfs/overlay.ko")]
    line = VIRT.read_text().splitlines().index("    - kernel/fs/overlayfs/overlay.ko") + 1
    assert overlay.where == f"{VIRT}:{line}: modules.include[{patterns.index(overlay.pattern)}]"
    assert [a.compress for a in spec.arches] == ["", "gzip", ""]
    assert not spec.arch("amd64").vmlinux
    # The same .debs as the full flavour: one `pkgtool kernel lock` refresh applies to both.
    assert [(a.package, a.sha256) for a in spec.arches] == [(a.package, a.sha256) for a in full.arches]


def test_include_and_compress_are_part_of_the_tag() -> None:
    text = VIRT.read_text()
    spec = parse_kernel_spec(text, VIRT)
    plain = parse_kernel_spec(text.replace("    compress: gzip\n", ""), VIRT)
    fewer = parse_kernel_spec(text.replace("    - kernel/fs/ext4/ext4.ko\n", ""), VIRT)
    assert len({kernel_tag(spec), kernel_tag(plain), kernel_tag(fewer)}) == 3


@pytest.mark.parametrize(("arch", "value", "message"), [
    ("amd64", "gzip", r"arches.amd64.compress: only for arm64: a bzImage and an s390 image already"),
    ("arm64", "xz", r"arches.arm64.compress: expected one of: gzip"),
])
def test_bad_compress_is_a_file_line_error(arch: str, value: str, message: str) -> None:
    text = VIRT.read_text().replace("    compress: gzip\n", "")
    entry = f"  {arch}:\n"
    text = text.replace(entry, f"{entry}    compress: {value}\n", 1)
    with pytest.raises(UsageError, match=r"kernel.yml:\d+: " + message):
        parse_kernel_spec(text, VIRT)
