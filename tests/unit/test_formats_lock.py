"""`pkgtool image lock`: the line-based rewrite keeps comments and layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgtool.assemble.lock import lock_file, unpinned
from pkgtool.cli import main
from pkgtool.errors import UsageError

DIGEST = "sha256:" + "ab" * 32
YAML = """# keep me
kernel:
  image: reg/kernel:6.1   # trailing comment
  cmdline: "console=ttyS0"
init:
  - reg/init:v1
  - reg/runc@sha256:{d}
onboot:
  - name: x
    image: "reg/x:1"
""".replace("{d}", "cd" * 32)


def test_lock_rewrites_only_unpinned_refs(tmp_path: Path) -> None:
    path = tmp_path / "a.yml"
    path.write_text(YAML)
    assert [r.ref for r in unpinned(path)] == ["reg/kernel:6.1", "reg/init:v1", "reg/x:1"]
    changes = lock_file(path, lambda ref: DIGEST)
    assert [old for old, _ in changes] == ["reg/kernel:6.1", "reg/init:v1", "reg/x:1"]
    text = path.read_text()
    assert text.startswith("# keep me\n")
    assert f"  image: reg/kernel:6.1@{DIGEST}   # trailing comment\n" in text
    assert f'    image: "reg/x:1@{DIGEST}"\n' in text
    assert unpinned(path) == []
    assert lock_file(path, lambda ref: pytest.fail("nothing left to resolve")) == []


def test_lock_strict_refuses_unpinned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.yml"
    path.write_text(YAML)
    assert main(["image", "lock", "--strict", str(path)]) == UsageError.exit_code
    assert "3 unpinned" in capsys.readouterr().err
    assert path.read_text() == YAML
    lock_file(path, lambda ref: DIGEST)
    assert main(["image", "lock", "--strict", str(path)]) == 0
