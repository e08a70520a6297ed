"""The from-source kernel path without a compiler: fragments, config checks, the tree
unpacker's refusals, the modules spool, dependencies, tag and environment."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from debkit import deb_bytes, tar_bytes

from pkgtool.errors import UsageError
from pkgtool.kernel import source
from pkgtool.kernel.deb_layout import KernelLayoutError, spool_installed_modules
from pkgtool.kernel.kernel_yml import load_kernel_spec

REPO = Path(__file__).resolve().parents[2]


def _source_deb(tmp_path: Path, tree: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    path = tmp_path / "linux-source.deb"
    path.write_bytes(deb_bytes([("./usr/share/doc/linux-source-6.1/copyright", b"GPL"),
                                ("./usr/src/linux-source-6.1.tar.xz", tar_bytes(tree))]))
    return path


GOOD_TREE: list[tarfile.TarInfo | tuple[str, bytes]] = [
    ("linux-source-6.1/Makefile", b"VERSION = 6\n"),
    ("linux-source-6.1/Kconfig", b"mainmenu x\n"),
    ("linux-source-6.1/scripts/dtc/x.c", b"int x;\n"),
]


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_extract_source_unpacks_the_tree_inside_the_root(tmp_path: Path) -> None:
    link = _link("linux-source-6.1/scripts/dtc/include-prefixes", "../x.c")
    deb = _source_deb(tmp_path, [*GOOD_TREE, link])
    root = source.extract_source(deb, tmp_path / "out")
    assert root == tmp_path / "out" / "linux-source-6.1"
    assert (root / "Makefile").read_bytes() == b"VERSION = 6\n"
    assert os.readlink(root / "scripts/dtc/include-prefixes") == "../x.c"


@pytest.mark.parametrize("evil, message", [
    (("linux-source-6.1/../../escape", b"x"), "outside|refusing"),
    (("/etc/evil", b"x"), "outside|refusing"),
    (("other-top/file", b"x"), "outside linux-source-6.1/"),
    (_link("linux-source-6.1/up", "../../../etc"), "refusing"),
    (_link("linux-source-6.1/abs", "/etc/passwd"), "refusing"),
    (_link("linux-source-6.1/hard", "/etc/passwd", tarfile.LNKTYPE), "refusing"),
])
def test_extract_source_refuses_hostile_members(tmp_path: Path, evil: tarfile.TarInfo | tuple[str, bytes],
                                                message: str) -> None:
    deb = _source_deb(tmp_path, [*GOOD_TREE, evil])
    with pytest.raises(source.SourceBuildError, match=message):
        source.extract_source(deb, tmp_path / "out")
    assert not (tmp_path / "escape").exists()


def test_extract_source_refuses_devices(tmp_path: Path) -> None:
    dev = tarfile.TarInfo("linux-source-6.1/null")
    dev.type = tarfile.CHRTYPE
    with pytest.raises(source.SourceBuildError, match="refusing"):
        source.extract_source(_source_deb(tmp_path, [*GOOD_TREE, dev]), tmp_path / "out")


def test_extract_source_needs_a_kernel_tree(tmp_path: Path) -> None:
    with pytest.raises(source.SourceBuildError, match="no kernel tree"):
        source.extract_source(_source_deb(tmp_path, [("linux-source-6.1/README", b"hi")]), tmp_path / "out")


def test_fragments_are_read_in_order_and_checked_against_the_result(tmp_path: Path) -> None:
    common = tmp_path / "common.config"
    common.write_text("# comment\nCONFIG_A=y\nCONFIG_LOCALVERSION=\"-x\"\n# CONFIG_B is not set\n\nCONFIG_C=m\n")
    arch = tmp_path / "arch.config"
    arch.write_text("CONFIG_LOCALVERSION=\"-x-amd64\"\nCONFIG_D=y\n")
    frags = source.read_fragments([common, arch])
    assert frags.wanted == {"CONFIG_A": "y", "CONFIG_LOCALVERSION": '"-x-amd64"', "CONFIG_B": "n",
                            "CONFIG_C": "m", "CONFIG_D": "y"}
    assert frags.where["CONFIG_LOCALVERSION"] == f"{arch}:1"
    assert frags.text.startswith("# comment\n") and frags.text.endswith("CONFIG_D=y\n")
    resolved = source.parse_config("CONFIG_A=y\nCONFIG_LOCALVERSION=\"-x-amd64\"\n# CONFIG_B is not set\n"
                                   "CONFIG_C=y\n")
    problems = source.config_problems(frags, resolved)
    assert problems == [
        f"{common}:6: CONFIG_C=m came out as y (a dependency is missing or the symbol does not exist)",
        f"{arch}:2: CONFIG_D=y came out as n (a dependency is missing or the symbol does not exist)",
    ]
    bad = tmp_path / "bad.config"
    bad.write_text("CONFIG_A=y\nnot a config line\n")
    with pytest.raises(UsageError, match=r"bad.config:2: expected CONFIG_X=value"):
        source.read_fragments([bad])


def test_committed_fragments_parse() -> None:
    spec = load_kernel_spec(REPO / "kernel/bookworm-6.1/kernel.yml")
    assert spec.source is not None
    assert spec.source.arches == ("amd64", "arm64", "s390x")
    for arch, files in spec.source.configs.items():
        frags = source.read_fragments(files)
        assert frags.wanted["CONFIG_MODULES"] == "y"
        assert frags.wanted["CONFIG_LOCALVERSION"] == f'"-pkgtool-{arch}"'
        assert frags.wanted["CONFIG_MODULE_SIG"] == "n"  # no random signing key: reproducible
        assert any(v == "m" for v in frags.wanted.values()), "kernel.tar would be empty"


def test_source_tag_follows_the_fragments(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    frag = tmp_path / "config" / "amd64.config"
    frag.write_text("CONFIG_MODULES=y\n")
    yml = tmp_path / "kernel.yml"
    yml.write_text(f"""image: pkgtool/kernel
version: 6.1.192-3
source_date_epoch: 1700000000
arches:
  amd64: {{package: linux-image-6.1.0-57-amd64, sha256: {"a" * 64}, vmlinux: true}}
source:
  image: pkgtool/kernel-source
  package: linux-source-6.1
  version: 6.1.192-3
  sha256: {"b" * 64}
  configs:
    amd64: [config/amd64.config]
""")
    first = source.source_tag(load_kernel_spec(yml))
    assert first.startswith("6.1.192-3-") and len(first.rsplit("-", 1)[1]) == 16
    assert source.source_tag(load_kernel_spec(yml)) == first
    frag.write_text("CONFIG_MODULES=y\nCONFIG_VETH=m\n")
    assert source.source_tag(load_kernel_spec(yml)) != first
    yml.write_text(yml.read_text().replace("\nsource:", "\nxsource:").split("xsource:")[0])
    with pytest.raises(UsageError, match="no `source:` section"):
        source.source_tag(load_kernel_spec(yml))


def test_spool_drops_kbuild_links_and_refuses_escapes(tmp_path: Path) -> None:
    release = "6.1.192-pkgtool-amd64"
    top = tmp_path / "lib/modules" / release
    (top / "kernel/net").mkdir(parents=True)
    (top / "kernel/net/veth.ko").write_bytes(b"\x7fELF")
    (top / "modules.order").write_text("kernel/net/veth.ko\n")
    os.symlink("/tmp/build-dir", top / "build")
    os.symlink("/tmp/src-dir", top / "source")
    os.symlink("kernel/net/veth.ko", top / "alias.ko")
    spool = spool_installed_modules(tmp_path, release, source="test")
    assert sorted(spool.files) == [f"lib/modules/{release}/kernel/net/veth.ko", f"lib/modules/{release}/modules.order"]
    assert spool.symlinks == {f"lib/modules/{release}/alias.ko": "kernel/net/veth.ko"}
    assert not (top / "build").is_symlink()
    os.symlink("../../../../etc", top / "kernel/evil")
    with pytest.raises(KernelLayoutError, match="leaving lib/modules"):
        spool_installed_modules(tmp_path, release, source="test")
    with pytest.raises(KernelLayoutError, match="made no lib/modules/other"):
        spool_installed_modules(tmp_path, "other", source="test")


def test_required_packages_and_missing_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = source.required_packages(["amd64", "arm64", "s390x"], "amd64")
    assert {"bc", "bison", "flex", "libssl-dev", "libelf-dev", "make", "gcc"} <= set(wanted)
    assert "gcc-aarch64-linux-gnu" in wanted and "gcc-s390x-linux-gnu" in wanted
    assert "gcc-x86-64-linux-gnu" not in wanted
    assert "gcc-x86-64-linux-gnu" in source.required_packages(["amd64"], "arm64")
    assert source.cross_prefix("arm64", "amd64") == "aarch64-linux-gnu-" and source.cross_prefix("amd64", "amd64") == ""
    monkeypatch.setattr(source, "missing_packages", lambda pkgs: [p for p in pkgs if p in ("flex", "gcc-s390x-linux-gnu")])
    with pytest.raises(source.SourceBuildError) as info:
        source.ensure_packages(wanted, install=False, log=lambda _m: None)
    assert str(info.value) == ("building the kernel from source needs Debian packages that are not installed: "
                               "flex, gcc-s390x-linux-gnu; run `apt-get install --no-install-recommends flex "
                               "gcc-s390x-linux-gnu`")


def test_missing_packages_asks_dpkg() -> None:
    assert source.missing_packages(["dpkg", "pkgtool-no-such-package"]) == ["pkgtool-no-such-package"]


def test_build_environment_is_clean_and_fixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KCFLAGS", "-O0")
    monkeypatch.setenv("ARCH", "riscv")
    env = source.build_environment(1700000000, tmp_path)
    assert "KCFLAGS" not in env and "ARCH" not in env
    assert env["KBUILD_BUILD_TIMESTAMP"] == "Tue Nov 14 22:13:20 UTC 2023"
    assert env["SOURCE_DATE_EPOCH"] == "1700000000"
    assert env["KBUILD_BUILD_USER"] == env["KBUILD_BUILD_HOST"] == "pkgtool"
    assert env["LOCALVERSION"] == "" and env["LC_ALL"] == "C" and env["TZ"] == "UTC"


def test_missing_dependencies_are_installed_with_apt_get_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    installed: set[str] = {"make"}
    calls: list[list[str]] = []
    monkeypatch.setattr(source, "missing_packages", lambda pkgs: [p for p in pkgs if p not in installed])
    monkeypatch.setattr(source.os, "geteuid", lambda: 0)

    def fake_run(argv: list[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        installed.update(a for a in argv if a in ("bison", "flex"))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr("pkgtool.kernel.source.subprocess.run", fake_run)
    logged: list[str] = []
    source.ensure_packages(["make", "bison", "flex"], install=True, log=logged.append)
    assert calls == [["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600",
                      "bison", "flex"]]
    assert logged == ["installing build dependencies: bison flex"]
    # apt-get "succeeds" but the package is still missing: a clear error, not a later compile failure.
    with pytest.raises(source.SourceBuildError, match=r"could not install the kernel build dependencies libelf-dev"):
        source.ensure_packages(["libelf-dev"], install=True, log=logged.append)
