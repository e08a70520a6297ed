"""`pkgtool kernel lock` with fake apt output: resolution, in-place rewrite, stale pins."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.kernel import debversion
from pkgtool.kernel.apt import AptCache, AptError, parse_records
from pkgtool.kernel.fetch import StalePinError, fetch_deb
from pkgtool.kernel.kernel_build import kernel_tag
from pkgtool.kernel.kernel_yml import load_kernel_spec
from pkgtool.kernel.lock import lock_kernel, top_version

SHA = {name: f"{i}f" * 32 for i, name in enumerate(
    ["old-amd64", "old-arm64", "old-s390x", "new-amd64", "new-arm64", "src-old", "src-new"], start=1)}

KERNEL_YML = f"""\
# A comment that must survive.
image: pkgtool/kernel
version: 6.1.176-1   # tag prefix
source_date_epoch: 1700000000
arches:
  amd64:
    package: linux-image-6.1.0-50-amd64
    sha256: {SHA['old-amd64']}
    # keep me
    vmlinux: true
  arm64: {{package: linux-image-6.1.0-50-arm64, sha256: {SHA['old-arm64']}}}
  s390x:
    package: linux-image-6.1.0-50-s390x
    sha256: {SHA['old-s390x']}
source:
  image: pkgtool/kernel-source
  package: linux-source-6.1
  version: 6.1.176-1
  sha256: {SHA['src-old']}
  configs:
    amd64: [c.config]
"""


def _stanza(package: str, version: str, arch: str, sha: str, depends: str = "") -> str:
    lines = [f"Package: {package}", f"Version: {version}", f"Architecture: {arch}"]
    if depends:
        lines.append(f"Depends: {depends}")
    lines += ["Description: x", " continued description", "Size: 123", f"SHA256: {sha}", ""]
    return "\n".join(lines) + "\n"


class FakeApt:
    """Answers `apt-cache show` from a table of (package, arch) -> stanzas, candidate first."""

    def __init__(self, table: dict[tuple[str, str], list[tuple[str, str, str]]]) -> None:
        self.table = table  # (package, arch) -> [(version, sha, depends)], candidate first
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        assert argv[:2] == ["apt-cache", "show"], argv
        name = argv[-1]
        version = ""
        if "=" in name:
            name, version = name.split("=", 1)
        package, _, arch = name.partition(":")
        arch = arch or "all"
        rows = self.table.get((package, arch))
        if rows is None:
            return 100, "", "E: No packages found"
        if version:
            rows = [r for r in rows if r[0] == version]
        elif "--no-all-versions" in argv:
            rows = rows[:1]
        return 0, "\n".join(_stanza(package, v, arch, s, d) for v, s, d in rows), ""


def _mirror(s390x_version: str = "6.1.176-1") -> FakeApt:
    return FakeApt({
        ("linux-image-amd64", "amd64"): [("6.1.192-3", "a" * 64, "linux-image-6.1.0-57-amd64 (= 6.1.192-3)")],
        ("linux-image-6.1.0-57-amd64", "amd64"): [("6.1.192-3", SHA["new-amd64"], "kmod, linux-base (>= 4.3~)")],
        ("linux-image-arm64", "arm64"): [("6.1.192-3", "b" * 64, "linux-image-6.1.0-57-arm64 (= 6.1.192-3)")],
        ("linux-image-6.1.0-57-arm64", "arm64"): [("6.1.192-3", SHA["new-arm64"], "kmod")],
        ("linux-image-s390x", "s390x"): [(s390x_version, "c" * 64, f"linux-image-6.1.0-50-s390x (= {s390x_version})")],
        ("linux-image-6.1.0-50-s390x", "s390x"): [("6.1.176-1", SHA["old-s390x"], "kmod")],
        ("linux-source-6.1", "all"): [("6.1.192-3", SHA["src-new"], "binutils"), ("6.1.176-1", SHA["src-old"], "")],
    })


@pytest.fixture
def kernel_yml(tmp_path: Path) -> Path:
    path = tmp_path / "kernel.yml"
    path.write_text(KERNEL_YML)
    (tmp_path / "c.config").write_text("CONFIG_MODULES=y\n")
    return path


def test_parse_records_and_depends() -> None:
    text = _stanza("linux-image-amd64", "6.1.192-3", "amd64", "A" * 64,
                   "linux-image-6.1.0-57-amd64 (= 6.1.192-3), foo | bar, baz (>= 1)")
    [record] = parse_records(text, what="x")
    assert record.sha256 == "a" * 64 and record.size == 123
    assert record.depends_on() == [("linux-image-6.1.0-57-amd64", "6.1.192-3"), ("foo", ""), ("baz", "")]
    with pytest.raises(AptError, match="lacks SHA256"):
        parse_records("Package: x\nVersion: 1\nArchitecture: all\n", what="x")


def test_debian_version_order() -> None:
    assert debversion.compare("6.1.192-3", "6.1.176-1") > 0
    assert debversion.compare("6.1.19-1", "6.1.176-1") < 0
    assert debversion.compare("1.0~rc1-1", "1.0-1") < 0
    assert debversion.compare("1:0.1-1", "9.9-1") > 0
    assert debversion.compare("2.0-1", "2.0-1") == 0
    assert debversion.newest(["6.1.176-1", "6.1.192-3", "6.1.192-2"]) == "6.1.192-3"
    assert top_version(["6.1.192-3", "6.1.192-3", "6.1.176-1"]) == "6.1.192-3"
    assert top_version(["6.1.176-1", "6.1.192-3"]) == "6.1.192-3"


def test_lock_rewrites_values_in_place_and_reports_lines(kernel_yml: Path) -> None:
    before_tag = kernel_tag(load_kernel_spec(kernel_yml))
    result = lock_kernel(kernel_yml, apt=AptCache(_mirror()))
    text = kernel_yml.read_text()
    assert result.written
    shown = [c.format("k.yml") for c in result.changes]
    assert shown == [
        "k.yml:3: version: 6.1.176-1 -> 6.1.192-3",
        "k.yml:7: arches.amd64.package: linux-image-6.1.0-50-amd64 -> linux-image-6.1.0-57-amd64",
        f"k.yml:8: arches.amd64.sha256: {SHA['old-amd64']} -> {SHA['new-amd64']}",
        "k.yml:11: arches.arm64.package: linux-image-6.1.0-50-arm64 -> linux-image-6.1.0-57-arm64",
        f"k.yml:11: arches.arm64.sha256: {SHA['old-arm64']} -> {SHA['new-arm64']}",
        "k.yml:14: arches.s390x.version: (unset) -> 6.1.176-1",
        "k.yml:19: source.version: 6.1.176-1 -> 6.1.192-3",
        f"k.yml:20: source.sha256: {SHA['src-old']} -> {SHA['src-new']}",
    ]
    # Only the values changed: comments, flow style and order are as written.
    assert text == KERNEL_YML.replace("version: 6.1.176-1   # tag", "version: 6.1.192-3   # tag") \
        .replace("linux-image-6.1.0-50-amd64", "linux-image-6.1.0-57-amd64") \
        .replace("linux-image-6.1.0-50-arm64", "linux-image-6.1.0-57-arm64") \
        .replace(SHA["old-amd64"], SHA["new-amd64"]).replace(SHA["old-arm64"], SHA["new-arm64"]) \
        .replace("    package: linux-image-6.1.0-50-s390x\n",
                 "    package: linux-image-6.1.0-50-s390x\n    version: 6.1.176-1\n") \
        .replace("  version: 6.1.176-1\n  sha256: " + SHA["src-old"], "  version: 6.1.192-3\n  sha256: " + SHA["src-new"])
    spec = load_kernel_spec(kernel_yml)
    assert spec.version == "6.1.192-3"
    assert [(a.arch, a.version, a.own_version) for a in spec.arches] == [
        ("amd64", "6.1.192-3", False), ("arm64", "6.1.192-3", False), ("s390x", "6.1.176-1", True)]
    assert kernel_tag(spec) != before_tag and kernel_tag(spec).startswith("6.1.192-3-")
    # Locking again changes nothing and writes nothing.
    again = lock_kernel(kernel_yml, apt=AptCache(_mirror()))
    assert again.changes == [] and not again.written and kernel_yml.read_text() == text


def test_lock_drops_a_per_arch_version_when_the_arch_catches_up(kernel_yml: Path) -> None:
    lock_kernel(kernel_yml, apt=AptCache(_mirror()))
    mirror = _mirror(s390x_version="6.1.192-3")
    mirror.table[("linux-image-s390x", "s390x")] = [("6.1.192-3", "c" * 64, "linux-image-6.1.0-57-s390x (= 6.1.192-3)")]
    mirror.table[("linux-image-6.1.0-57-s390x", "s390x")] = [("6.1.192-3", "d" * 64, "")]
    result = lock_kernel(kernel_yml, apt=AptCache(mirror))
    shown = [c.format("k.yml") for c in result.changes]
    assert "k.yml:14: arches.s390x.version: 6.1.176-1 -> (removed: same as the top-level version)" in shown
    assert "version: 6.1.176-1" not in kernel_yml.read_text()
    assert not load_kernel_spec(kernel_yml).arch("s390x").own_version


def test_lock_check_writes_nothing_and_arch_subset_keeps_top_version(kernel_yml: Path) -> None:
    result = lock_kernel(kernel_yml, apt=AptCache(_mirror()), check=True)
    assert result.changes and not result.written and kernel_yml.read_text() == KERNEL_YML
    result = lock_kernel(kernel_yml, apt=AptCache(_mirror()), arches=["amd64"])
    spec = load_kernel_spec(kernel_yml)
    assert spec.version == "6.1.176-1"
    assert spec.arch("amd64").version == "6.1.192-3" and spec.arch("amd64").own_version
    assert spec.arch("arm64").package == "linux-image-6.1.0-50-arm64"
    with pytest.raises(UsageError, match=r"--arch riscv64: not in this kernel\.yml"):
        lock_kernel(kernel_yml, apt=AptCache(_mirror()), arches=["riscv64"])


def test_lock_errors_are_one_line(kernel_yml: Path) -> None:
    mirror = _mirror()
    del mirror.table[("linux-image-s390x", "s390x")]
    with pytest.raises(AptError, match=r"apt knows no package linux-image-s390x:s390x; .*dpkg --add-architecture s390x"):
        lock_kernel(kernel_yml, apt=AptCache(mirror))
    mirror = _mirror()
    mirror.table[("linux-image-amd64", "amd64")] = [("6.1.192-3", "a" * 64, "linux-image-6.1.0-58-amd64 (= 6.1.192-4)")]
    with pytest.raises(AptError, match=r"depends on linux-image-6.1.0-58-amd64 \(= 6.1.192-4\), which apt does not have"):
        lock_kernel(kernel_yml, apt=AptCache(mirror))
    assert kernel_yml.read_text() == KERNEL_YML


def test_stale_pin_fails_with_the_lock_hint(tmp_path: Path) -> None:
    apt = AptCache(_mirror())
    with pytest.raises(StalePinError) as info:
        fetch_deb(package="linux-image-6.1.0-50-amd64", arch="amd64", version="6.1.176-1", sha256=SHA["old-amd64"],
                  cache=tmp_path, apt=apt, where="kernel/x/kernel.yml:6: arches.amd64",
                  lock_hint="pkgtool kernel lock kernel/x")
    message = str(info.value)
    assert "\n" not in message
    assert message == ("kernel/x/kernel.yml:6: arches.amd64: linux-image-6.1.0-50-amd64:amd64=6.1.176-1 is no longer "
                       "on the mirror (it has no linux-image-6.1.0-50-amd64:amd64 at all); the pin is stale: "
                       "run `pkgtool kernel lock kernel/x` to re-pin")
    with pytest.raises(StalePinError, match=r"=6.1.0-1 is no longer on the mirror \(it has 6.1.192-3\)"):
        fetch_deb(package="linux-image-6.1.0-57-amd64", arch="amd64", version="6.1.0-1", sha256=SHA["new-amd64"],
                  cache=tmp_path, apt=apt)
    with pytest.raises(StalePinError, match=r"the mirror lists sha256 .* but the pin says 0000"):
        fetch_deb(package="linux-image-6.1.0-57-amd64", arch="amd64", version="6.1.192-3", sha256="0" * 64,
                  cache=tmp_path, apt=apt)


def test_cached_deb_builds_without_asking_the_mirror(tmp_path: Path) -> None:
    import hashlib

    data = b"a verified deb"
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "debs").mkdir()
    (tmp_path / "debs" / f"{sha}.deb").write_bytes(data)
    apt = FakeApt({})
    assert fetch_deb(package="gone", arch="amd64", version="1", sha256=sha, cache=tmp_path, apt=AptCache(apt)).is_file()
    assert apt.calls == []


def test_spec_rejects_bad_versions_and_source_sections(tmp_path: Path) -> None:
    path = tmp_path / "kernel.yml"
    path.write_text(KERNEL_YML.replace("    vmlinux: true\n", "    vmlinux: true\n    version: 'x y'\n"))
    (tmp_path / "c.config").write_text("")
    with pytest.raises(UsageError, match=r"kernel.yml:\d+: arches.amd64.version: required, must match"):
        load_kernel_spec(path)
    path.write_text(KERNEL_YML.replace("image: pkgtool/kernel-source", "image: pkgtool/kernel"))
    with pytest.raises(UsageError, match=r"source\.image: must differ from the \.deb image"):
        load_kernel_spec(path)
    path.write_text(KERNEL_YML.replace("[c.config]", "[../escape.config]"))
    with pytest.raises(UsageError, match=r"source.configs.amd64\[0\]: expected a relative path"):
        load_kernel_spec(path)
    path.write_text(KERNEL_YML.replace("[c.config]", "[missing.config]"))
    with pytest.raises(UsageError, match="no such file"):
        load_kernel_spec(path)


def test_tag_is_unchanged_for_files_without_per_arch_versions(tmp_path: Path) -> None:
    """Adding the per-arch version feature must not move the tags of existing pins."""
    path = tmp_path / "kernel.yml"
    path.write_text(KERNEL_YML.split("source:")[0])
    spec = load_kernel_spec(path)
    import hashlib

    from pkgtool.jsonio import hashed_json
    from pkgtool.kernel.deb_layout import LAYOUT_VERSION

    legacy = {"layout": LAYOUT_VERSION, "image": spec.image, "version": spec.version,
              "source_date_epoch": spec.source_date_epoch,
              "arches": {a.arch: {"package": a.package, "sha256": a.sha256, "vmlinux": a.vmlinux} for a in spec.arches}}
    assert kernel_tag(spec) == f"{spec.version}-{hashlib.sha256(hashed_json(legacy)).hexdigest()[:16]}"


def test_lock_edits_flow_mappings(tmp_path: Path) -> None:
    """A per-arch version inside a flow mapping is removed without touching its neighbours."""
    path = tmp_path / "kernel.yml"
    (tmp_path / "c.config").write_text("")
    path.write_text(KERNEL_YML.replace(
        f"  s390x:\n    package: linux-image-6.1.0-50-s390x\n    sha256: {SHA['old-s390x']}\n",
        f"  s390x: {{package: linux-image-6.1.0-50-s390x, version: 6.1.170-1, sha256: {SHA['old-s390x']}}}\n"))
    mirror = _mirror(s390x_version="6.1.192-3")
    mirror.table[("linux-image-s390x", "s390x")] = [("6.1.192-3", "c" * 64, "linux-image-6.1.0-57-s390x (= 6.1.192-3)")]
    mirror.table[("linux-image-6.1.0-57-s390x", "s390x")] = [("6.1.192-3", "d" * 64, "")]
    lock_kernel(path, apt=AptCache(mirror))
    assert f"  s390x: {{package: linux-image-6.1.0-57-s390x, sha256: {'d' * 64}}}\n" in path.read_text()
    assert load_kernel_spec(path).arch("s390x").version == "6.1.192-3"


def test_lock_quotes_a_digest_that_would_read_as_a_number(kernel_yml: Path) -> None:
    mirror = _mirror()
    mirror.table[("linux-image-6.1.0-57-amd64", "amd64")] = [("6.1.192-3", "1" * 64, "")]
    lock_kernel(kernel_yml, apt=AptCache(mirror))
    assert f'sha256: "{"1" * 64}"' in kernel_yml.read_text()
    assert load_kernel_spec(kernel_yml).arch("amd64").sha256 == "1" * 64


def test_lock_refuses_to_remove_a_key_that_shares_its_line(tmp_path: Path) -> None:
    from pkgtool.kernel.lock import _Editor

    editor = _Editor("arches:\n  s390x:\n    version: 1 # ok\n    package: x\n")
    editor.delete(("arches", "s390x"), "version")
    assert editor.result() == "arches:\n  s390x:\n    package: x\n"
    editor = _Editor("a: {b: 1}\n")
    with pytest.raises(PkgtoolError, match="only key"):
        editor.delete(("a",), "b")


def test_a_download_with_other_bytes_is_refused_and_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mirror's index agrees with the pin, but the bytes apt-get fetches do not."""
    import subprocess

    from pkgtool.errors import DigestMismatchError

    def fake_download(argv: list[str], *, cwd: str, **_kw: object) -> subprocess.CompletedProcess[str]:
        assert argv[:2] == ["apt-get", "download"]
        (Path(cwd) / "linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb").write_bytes(b"tampered")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr("pkgtool.kernel.fetch.subprocess.run", fake_download)
    with pytest.raises(DigestMismatchError, match=r"downloaded \.deb has sha256 .* but the pin says"):
        fetch_deb(package="linux-image-6.1.0-57-amd64", arch="amd64", version="6.1.192-3", sha256=SHA["new-amd64"],
                  cache=tmp_path, apt=AptCache(_mirror()))
    assert list((tmp_path / "debs").iterdir()) == []


def test_an_unquoted_numeric_digest_gets_a_clear_error(kernel_yml: Path) -> None:
    kernel_yml.write_text(KERNEL_YML.replace(SHA["old-amd64"], "1" * 64))
    with pytest.raises(UsageError, match=r"kernel.yml:8: arches.amd64.sha256: must be a string: .* quote it"):
        load_kernel_spec(kernel_yml)


def test_lock_cli_prints_changes_and_check_exits_1(kernel_yml: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from pkgtool import cli

    monkeypatch.setattr("pkgtool.kernel.lock.AptCache", lambda: AptCache(_mirror()))
    assert cli.main(["kernel", "lock", "--check", str(kernel_yml.parent)]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines()[0] == f"{kernel_yml}:3: version: 6.1.176-1 -> 6.1.192-3"
    assert "pin(s) out of date" in out.err and kernel_yml.read_text() == KERNEL_YML
    assert cli.main(["kernel", "lock", str(kernel_yml.parent)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 8
    assert cli.main(["kernel", "lock", "--check", str(kernel_yml)]) == 0
    assert "up to date" in capsys.readouterr().err


def test_build_flags_for_source_builds_only(kernel_yml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pkgtool import cli

    assert cli.main(["kernel", "build", "--arch", "amd64", str(kernel_yml)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "pkgtool: error: --arch: only with --from-source"
