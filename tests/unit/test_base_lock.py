"""Lock files, recipe validation, tags and mismatch errors for the Debian base."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgtool.base.base_build import base_tag, load_locks
from pkgtool.base.bootstrap import mmdebstrap_argv, parse_simulated, remove_hooks
from pkgtool.base.lockfile import LockMismatchError, check_lock, format_lock, parse_lock
from pkgtool.base.recipe import load_recipe
from pkgtool.errors import UsageError

REPO = Path(__file__).resolve().parents[2]

RECIPE = """\
image: pkgtool/base
suite: bookworm
variant: minbase
source_date_epoch: 1700000000
arches: [arm64, amd64]
dpkg_options: ["path-exclude=/usr/share/man/*"]
"""


def _recipe(tmp_path: Path, text: str = RECIPE) -> Path:
    path = tmp_path / "base.yml"
    path.write_text(text)
    for arch in ("amd64", "arm64"):
        (tmp_path / f"versions.{arch}").write_text(format_lock({"libc6": "2.36-9", "dash": "0.5.12-2"}, header="t"))
    return path


def test_parse_lock_round_trips_sorted() -> None:
    text = format_lock({"zlib1g": "1:1.2.13", "apt": "2.6.2"}, header="hdr")
    assert text.splitlines() == ["# hdr", "apt 2.6.2", "zlib1g 1:1.2.13"]
    assert parse_lock(text + "\n# c\n", source="x") == {"apt": "2.6.2", "zlib1g": "1:1.2.13"}


@pytest.mark.parametrize(("text", "message"), [
    ("apt\n", "x:1: expected 'name version'"),
    ("apt 1 2\n", "x:1: expected 'name version'"),
    ("Apt 1\n", "invalid package name"),
    ("apt 1\napt 2\n", "x:2: apt is listed twice"),
    ("apt 1/2\n", "invalid version"),
])
def test_parse_lock_rejects_malformed_lines(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_lock(text, source="x")


def test_mismatch_error_names_packages_and_the_fix(tmp_path: Path) -> None:
    locked = {"libc6": "2.36-9+deb12u13", "dash": "0.5.12-2", "old": "1"}
    resolved = {"libc6": "2.36-9+deb12u14", "dash": "0.5.12-2", "new": "2"}
    with pytest.raises(LockMismatchError) as err:
        check_lock(locked, resolved, lock_path=tmp_path / "versions.amd64", stage="resolve")
    message = str(err.value)
    assert "libc6 locked at 2.36-9+deb12u13, mirror has 2.36-9+deb12u14" in message
    assert "new 2 is new" in message and "old 1 is locked but no longer installed" in message
    assert "run `pkgtool base lock`" in message and "versions.amd64" in message
    check_lock(locked, dict(locked), lock_path=tmp_path / "v", stage="resolve")  # equal: no error


def test_missing_lock_tells_how_to_create_it(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path))
    (tmp_path / "versions.arm64").unlink()
    with pytest.raises(UsageError, match=r"versions.arm64: lock file missing; create it with `pkgtool base lock`"):
        load_locks(recipe)


def test_recipe_sorts_arches_and_rejects_unknown_keys(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path))
    assert recipe.arches == ("amd64", "arm64")
    assert recipe.cmd == ("/bin/sh",) and recipe.env[0].startswith("PATH=")
    with pytest.raises(UsageError, match=r"base.yml:7: varient: unknown key"):
        load_recipe(_recipe(tmp_path, RECIPE + "varient: x\n"))
    with pytest.raises(UsageError, match=r"arches\[0\]: unsupported"):
        load_recipe(_recipe(tmp_path, RECIPE.replace("[arm64, amd64]", "[riscv64]")))


def test_tag_changes_with_a_lock_version_and_the_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path))
    locks = load_locks(recipe)
    tag = base_tag(recipe, locks)
    assert len(tag) == 40 and tag == base_tag(recipe, load_locks(recipe))
    bumped = {**locks, "arm64": {**locks["arm64"], "libc6": "2.36-10"}}
    assert base_tag(recipe, bumped) != tag
    other = load_recipe(_recipe(tmp_path, RECIPE.replace("1700000000", "1700000001")))
    assert base_tag(other, locks) != tag


def test_repo_recipe_and_locks_load() -> None:
    recipe = load_recipe(REPO / "pkg/base/base.yml")
    locks = load_locks(recipe)
    assert set(locks) == {"amd64", "arm64", "s390x"}
    assert all("libc6" in lock and "dash" in lock for lock in locks.values())


def test_mmdebstrap_argv_is_fixed_and_complete(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path))
    argv = mmdebstrap_argv(recipe, "arm64", "out.tar", simulate=True)
    assert argv == ["mmdebstrap", "--variant=minbase", "--mode=root", "--arch=arm64", "--simulate",
                    "--verbose", "--dpkgopt=path-exclude=/usr/share/man/*", "bookworm", "out.tar"]


def test_parse_simulated_reads_apt_inst_lines() -> None:
    output = (
        "I: simulate downloading packages with apt...\n"
        "Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [arm64])\n"
        "Conf gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [arm64])\n"
        "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [arm64]) []\n"
        "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [arm64]) []\n"
    )
    assert parse_simulated(output) == {"gcc-12-base": "12.2.0-14+deb12u1", "libc6": "2.36-9+deb12u14"}


def test_remove_globs_become_hooks_and_unsafe_paths_are_refused(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path, RECIPE + "remove: [/etc/ssh/ssh_host_*, /var/lib/x/seed]\n"))
    assert recipe.remove == ("/etc/ssh/ssh_host_*", "/var/lib/x/seed")
    assert remove_hooks(recipe) == ('rm -rf -- "$1"/etc/ssh/ssh_host_*', 'rm -rf -- "$1"/var/lib/x/seed')
    assert base_tag(recipe, load_locks(recipe)) != base_tag(load_recipe(_recipe(tmp_path)), load_locks(recipe))
    for bad in ("etc/relative", "/etc/../x", "/etc/a b", "/etc/$(reboot)", "/etc/x;y", "/"):
        with pytest.raises(UsageError, match=r"remove\[0\]: expected a string matching"):
            load_recipe(_recipe(tmp_path, RECIPE + f"remove: [{bad!r}]\n"))


def test_a_package_provided_by_an_essential_one_gets_its_own_hint(tmp_path: Path) -> None:
    locked = {"dash": "0.5.12-2", "lsb-base": "11.6"}
    with pytest.raises(LockMismatchError, match=r"lsb-base 11.6 is locked but no longer installed.*add them to the recipe's include:"):
        check_lock(locked, {"dash": "0.5.12-2"}, lock_path=tmp_path / "versions.amd64", stage="installed packages")
    with pytest.raises(LockMismatchError, match=r"run `pkgtool base lock` to refresh"):
        check_lock(locked, {"dash": "0.5.12-2"}, lock_path=tmp_path / "versions.amd64", stage="resolve")


def test_include_for_adds_packages_to_one_arch_only(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path, RECIPE + "include: [crun]\ninclude_for:\n  amd64: [open-vm-tools]\n"))
    assert recipe.includes("amd64") == ("crun", "open-vm-tools") and recipe.includes("arm64") == ("crun",)
    assert "--include=crun,open-vm-tools" in mmdebstrap_argv(recipe, "amd64", "out.tar")
    assert "--include=crun" in mmdebstrap_argv(recipe, "arm64", "out.tar")
    with pytest.raises(UsageError, match=r"base.yml:8: include_for.s390x: not one of this recipe's arches"):
        load_recipe(_recipe(tmp_path, RECIPE + "include_for:\n  s390x: [x]\n"))
    with pytest.raises(UsageError, match=r"include_for: expected a mapping"):
        load_recipe(_recipe(tmp_path, RECIPE + "include_for: [x]\n"))
