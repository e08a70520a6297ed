"""The CLI entry point: version, help, lazy imports and error reporting."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pkgtool import __version__
from pkgtool.cli import main

HEAVY_MODULES = ("requests", "grpc", "docker", "cryptography", "yaml", "zstandard", "google.protobuf")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"pkgtool {__version__}"


def test_help_lists_command_groups(capsys: pytest.CaptureFixture[str]) -> None:
    from pkgtool.cli import COMMAND_MODULES

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for module in COMMAND_MODULES:
        assert module.replace("_", "-") in out


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: pkgtool" in capsys.readouterr().err


def test_startup_imports_nothing_heavy() -> None:
    # Startup cost is dominated by imports; `--help` builds every subparser, so it proves
    # that no command module imports a heavy dependency at module level.
    code = (
        "import sys\n"
        "from pkgtool.cli import build_parser\n"
        "build_parser()\n"
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_ctrl_c_does_not_wait_for_a_thread_that_will_not_stop() -> None:
    # A worker stuck in a call that ignores cancellation: the interpreter would join it at
    # exit and hold the terminal; after Ctrl-C pkgtool leaves without it, naming it.
    script = (
        "import threading, time\n"
        "from pkgtool.cli import leave_if_threads_linger\n"
        "threading.Thread(target=time.sleep, args=(600,), name='stuck-solve').start()\n"
        "leave_if_threads_linger(False)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130
    assert "not waiting for 1 thread(s) still winding down: stuck-solve" in done.stderr
    assert time.monotonic() - started < 30
