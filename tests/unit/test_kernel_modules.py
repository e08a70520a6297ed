"""kernel.yml's modules: rule (include, exclude, the dependency closure, built-in modules)
and the gzip'd kernel form, on synthetic inputs; test_kernel.py runs them on Debian's .debs."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from test_kernel_deb import ARM64_IMAGE, _deb

from pkgtool.errors import UsageError
from pkgtool.kernel import kernel_form
from pkgtool.kernel.deb_layout import build_kernel_layout
from pkgtool.kernel.kernel_yml import ModuleGlob
from pkgtool.kernel.module_select import parse_modules_dep, select_modules

DEP = """kernel/net/virtio_net.ko: kernel/net/net_failover.ko kernel/net/failover.ko
kernel/net/net_failover.ko: kernel/net/failover.ko
kernel/net/failover.ko:
kernel/fs/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2.ko
kernel/fs/jbd2.ko:
kernel/lib/crc16.ko:
kernel/sound/snd.ko: kernel/lib/crc16.ko
kernel/sound/snd-hda.ko: kernel/sound/snd.ko
"""
NEEDS = parse_modules_dep(DEP)
BUILTIN = ["kernel/drivers/virtio/virtio.ko"]


def globs(*patterns: str) -> tuple[ModuleGlob, ...]:
    return tuple(ModuleGlob(p, f"kernel.yml:{10 + i}: modules.include[{i}]") for i, p in enumerate(patterns))


def test_include_keeps_the_matches_and_their_dependency_closure() -> None:
    chosen = select_modules(NEEDS, BUILTIN, include=globs("kernel/net/virtio_net.ko", "kernel/fs/*"), exclude=(),
                            kernel="linux-image-x (arm64)")
    assert chosen.keep == {"kernel/net/virtio_net.ko", "kernel/net/net_failover.ko", "kernel/net/failover.ko",
                           "kernel/fs/ext4.ko", "kernel/fs/jbd2.ko", "kernel/lib/crc16.ko"}
    assert chosen.builtin_only == ()


def test_exclude_alone_never_drops_a_dependency_of_a_kept_module() -> None:
    chosen = select_modules(NEEDS, BUILTIN, include=(), exclude=("kernel/lib/*", "kernel/sound/*"), kernel="k")
    assert "kernel/lib/crc16.ko" in chosen.keep  # ext4 needs it
    assert not {"kernel/sound/snd.ko", "kernel/sound/snd-hda.ko"} & chosen.keep


def test_exclude_trims_the_include_set_but_dependencies_win() -> None:
    chosen = select_modules(NEEDS, BUILTIN, include=globs("kernel/*"), exclude=("kernel/sound/*", "kernel/fs/jbd2.ko"),
                            kernel="k")
    assert "kernel/sound/snd.ko" not in chosen.keep
    assert "kernel/fs/jbd2.ko" in chosen.keep  # excluded, but ext4 depends on it


def test_a_built_in_module_satisfies_include() -> None:
    chosen = select_modules(NEEDS, BUILTIN, include=globs("kernel/drivers/virtio/virtio.ko", "kernel/fs/ext4.ko"),
                            exclude=(), kernel="k")
    assert chosen.builtin_only == ("kernel/drivers/virtio/virtio.ko",)
    assert "kernel/drivers/virtio/virtio.ko" not in chosen.keep


@pytest.mark.parametrize("pattern", ["kernel/net/virtio-net.ko", "kernel/gpu/*"])
def test_an_include_glob_matching_nothing_is_a_kernel_yml_line_error(pattern: str) -> None:
    with pytest.raises(UsageError, match=rf"^kernel.yml:11: modules.include\[1\]: '{re.escape(pattern)}' matches no module "
                                         r"of linux-image-x \(arm64\), neither a loadable one nor one built into"):
        select_modules(NEEDS, BUILTIN, include=globs("kernel/fs/*", pattern), exclude=(), kernel="linux-image-x (arm64)")


def test_gzip_form_is_reproducible_and_round_trips(tmp_path: Path) -> None:
    layout = build_kernel_layout(_deb(tmp_path), arch="arm64", epoch=0, vmlinux=False, workdir=tmp_path / "w",
                                 compress="gzip")
    shipped = (layout.root / "kernel").read_bytes()
    assert shipped == kernel_form.compressed(ARM64_IMAGE, "gzip") and shipped[:2] == b"\x1f\x8b"
    assert gzip.decompress(shipped) == ARM64_IMAGE == kernel_form.uncompressed(shipped)
    assert shipped[4:8] == b"\0\0\0\0"  # no mtime in the gzip header
    assert kernel_form.uncompressed(ARM64_IMAGE) == ARM64_IMAGE


def test_include_error_names_the_package_when_reading_a_deb(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"kernel.yml:10: modules.include\[0\]: 'kernel/none.ko' matches no module "
                                         r"of linux-image-9 \(arm64\)"):
        build_kernel_layout(_deb(tmp_path), arch="arm64", epoch=0, vmlinux=False, workdir=tmp_path / "w",
                            include=globs("kernel/none.ko"), kernel_name="linux-image-9 (arm64)")
