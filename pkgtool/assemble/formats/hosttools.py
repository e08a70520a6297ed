"""Host tools the disk formats call (mkfs.vfat, xorriso, qemu-img, …), run with one-line errors."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pkgtool.errors import PkgtoolError


def require_tool(tool: str, package: str, *, purpose: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise PkgtoolError(f"{purpose} needs {tool}, which is not installed: apt-get install {package}")
    return found


def run(cmd: Sequence[str | Path], *, what: str, env: dict[str, str] | None = None, stdin: int | None = None,
        cwd: Path | None = None) -> None:
    """Run a host tool; a failure becomes one line naming the tool and its last stderr line."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, env=env, stdin=stdin, cwd=cwd, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        tail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise PkgtoolError(f"{what}: {Path(str(cmd[0])).name} failed: {tail}")
