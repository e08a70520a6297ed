"""`pkgtool update-hashes` and `pkgtool lint` on a real chain of packages and an image YAML.

a FROMs the busybox base (external, pinned), b FROMs a, c FROMs b, and examples/x.yml runs
c.  Changing a must re-pin b, c and the YAML, in that order, and leave lint passing.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import basekit
import pytest
from test_build import _commit, _git, pkgtool, show_tag

from pkgtool.oci.registry import RegistryClient

pytestmark = pytest.mark.integration

STALE = "0" * 40
ZERO = "sha256:" + "0" * 64


def _package(root: Path, name: str, org: str, dockerfile: str) -> None:
    directory = root / "pkg" / name
    directory.mkdir(parents=True)
    (directory / "build.yml").write_text(f"image: {name}\norg: {org}\narches: [amd64, arm64]\n")
    (directory / "Dockerfile").write_text(dockerfile)


def test_update_hashes_repins_dependents_and_yaml_then_lint_passes(tmp_path: Path, registry: str) -> None:
    base = basekit.push_busybox_base(registry)
    org = f"pkgtool-test/p{secrets.token_hex(5)}"
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "examples").mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.org")
    _git(root, "config", "user.name", "t")
    head = "ARG PKGTOOL_REGISTRY=127.0.0.1:5000\n"
    _package(root, "a", org, head + f"FROM {base.pinned('${PKGTOOL_REGISTRY}')} AS build\n"
             "RUN mkdir /out && echo a1 > /out/a\nFROM scratch\nCOPY --from=build /out/ /\n")
    _package(root, "b", org, head + f"FROM ${{PKGTOOL_REGISTRY}}/{org}/a:{STALE}@{ZERO} AS a\n"
             "FROM scratch\nCOPY --from=a /a /b\n")
    _package(root, "c", org, head + f"FROM ${{PKGTOOL_REGISTRY}}/{org}/b:{STALE} AS b\n"
             "FROM scratch\nCOPY --from=b /b /c\n")
    (root / "examples/x.yml").write_text(f"# an image\nonboot:\n  - name: c\n    image: {registry}/{org}/c:{STALE}\n")
    _commit(root)

    lint = pkgtool("lint", cwd=root)
    assert lint.returncode == 1
    lines = lint.stdout.splitlines()
    assert any(line.startswith("pkg/b/Dockerfile:2: ") and "stale" in line for line in lines), lint.stdout
    assert any(line.startswith("pkg/c/Dockerfile:2: ") and "not pinned by digest" in line for line in lines)
    assert any(line.startswith("examples/x.yml:4: ") for line in lines)
    assert "Traceback" not in lint.stderr

    first = pkgtool("update-hashes", cwd=root, timeout=900)
    assert first.returncode == 0, first.stderr
    rewritten = [line.split(":")[0] for line in first.stdout.splitlines()]
    assert rewritten == ["pkg/b/Dockerfile", "pkg/c/Dockerfile", "examples/x.yml"]
    assert pkgtool("lint", cwd=root).returncode == 0

    again = pkgtool("update-hashes", cwd=root)
    assert again.returncode == 0 and again.stdout == ""  # nothing is stale any more

    # Change a without committing: its tag moves (and is -dirty); b, c and the YAML follow.
    _commit(root)
    dockerfile = root / "pkg/a/Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("a1", "a2"))
    assert pkgtool("lint", cwd=root).returncode == 1
    moved = pkgtool("update-hashes", cwd=root, timeout=900)
    assert moved.returncode == 0, moved.stderr
    assert [line.split(":")[0] for line in moved.stdout.splitlines()] == ["pkg/b/Dockerfile", "pkg/c/Dockerfile", "examples/x.yml"]
    assert pkgtool("lint", cwd=root).returncode == 0
    pinned = (root / "examples/x.yml").read_text().split("image: ")[1].strip()
    assert "-dirty" not in pinned  # pins name the tag the commit will have

    # After the commit the clean tags are built and, the builds being reproducible and
    # git-free, give exactly the digests the pins already name.
    _commit(root)
    c_tag = show_tag(root, "c")
    assert pinned.startswith(f"{registry}/{c_tag}@")
    built = pkgtool("build", "pkg/c", cwd=root, timeout=900)
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == pinned
    assert pkgtool("lint", "--check-registry", cwd=root).returncode == 0
    with RegistryClient(registry) as client:
        assert client.head_manifest(f"{org}/c", c_tag.split(":", 1)[1]).digest == pinned.rsplit("@", 1)[1]
