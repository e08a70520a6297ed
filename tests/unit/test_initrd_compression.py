"""The initrd's compression follows the kernel image's /config: zstd when it has
CONFIG_RD_ZSTD=y, gzip otherwise; zstd for a kernel without it is refused before output."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import imagekit

from pkgtool.assemble.image_build import build_image
from pkgtool.assemble.initrd_compression import choose, config_enables
from pkgtool.errors import UsageError
from pkgtool.oci.layout import Layout

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DEBIAN_LIKE = b"# comment\nCONFIG_RD_GZIP=y\nCONFIG_RD_XZ=y\nCONFIG_RD_ZSTD=y\nCONFIG_RD_ZSTD_X=m\n"
NO_ZSTD = b"CONFIG_RD_GZIP=y\n# CONFIG_RD_ZSTD is not set\nCONFIG_RD_ZSTD_EXTRA=y\n"


@pytest.mark.parametrize(("config", "requested", "chosen"), [
    (DEBIAN_LIKE, "auto", "zstd"),
    (gzip.compress(DEBIAN_LIKE), "auto", "zstd"),  # /proc/config.gz style
    (NO_ZSTD, "auto", "gzip"),
    (None, "auto", "gzip"),  # no /config: what every kernel reads
    (DEBIAN_LIKE, "gzip", "gzip"),
    (None, "zstd", "zstd"),  # nothing says it cannot: the user's word
    (DEBIAN_LIKE, "zstd", "zstd"),
])
def test_choice(config: bytes | None, requested: str, chosen: str) -> None:
    assert choose(requested, config, kernel="k") == chosen


def test_zstd_for_a_kernel_without_it_is_refused() -> None:
    with pytest.raises(UsageError, match=r"^--initrd-compression zstd: kernel reg/k@sha256:1 cannot unpack a zstd "
                                         r"initramfs \(its /config does not set CONFIG_RD_ZSTD=y\); use gzip$"):
        choose("zstd", NO_ZSTD, kernel="reg/k@sha256:1")
    with pytest.raises(UsageError, match="unknown initrd compression 'xz'"):
        choose("xz", DEBIAN_LIKE, kernel="k")


def test_option_must_be_exactly_y() -> None:
    assert not config_enables(b"CONFIG_RD_ZSTD=m\n", "CONFIG_RD_ZSTD")
    assert not config_enables(b"XCONFIG_RD_ZSTD=y\n", "CONFIG_RD_ZSTD")
    assert config_enables(b"A=1\nCONFIG_RD_ZSTD=y\n", "CONFIG_RD_ZSTD")


def _yaml(cache: Path, config: bytes | None) -> Path:
    layout = Layout(cache)
    files = [("kernel", "file", b"KERNEL" * 10, 0o644)]
    if config is not None:
        files.append(("config", "file", config, 0o644))
    kernel = imagekit.store_image(layout, "127.0.0.1:5000/unit/kernel", [imagekit.layer_tar(files)], arch="amd64")
    init = imagekit.store_image(layout, "127.0.0.1:5000/unit/init",
                                [imagekit.layer_tar([("init", "file", b"#!/bin/sh\n", 0o755)])], arch="amd64")
    yml = cache.parent / "img.yml"
    yml.write_text(f"kernel:\n  image: {kernel}\n  cmdline: console=ttyS0\n  tar: none\ninit:\n  - {init}\n")
    return yml


def test_default_follows_the_kernel_config(tmp_path: Path) -> None:
    for name, config, magic in (("zstd", DEBIAN_LIKE, ZSTD_MAGIC), ("gzip", NO_ZSTD, b"\x1f\x8b")):
        yml = _yaml(tmp_path / name / "cache", config)
        build_image([yml], formats=["kernel+initrd"], arch="amd64", out_dir=tmp_path / name / "out",
                    cache=tmp_path / name / "cache")
        assert (tmp_path / name / "out" / "img-initrd.img").read_bytes()[:len(magic)] == magic, name


def test_refused_zstd_writes_nothing(tmp_path: Path) -> None:
    yml = _yaml(tmp_path / "cache", NO_ZSTD)
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="cannot unpack a zstd initramfs"):
        build_image([yml], formats=["kernel+initrd", "iso-bios"], arch="amd64", out_dir=out, cache=tmp_path / "cache",
                    compression="zstd")
    assert not out.exists()
