"""`pkgtool key generate` through the real CLI entry point."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from pkgtool.cli import main
from pkgtool.sign import keys


def test_generate_default_prefix_in_cwd(tmp_path: Path) -> None:
    env = {**os.environ, "PKGTOOL_PASSWORD": "pw-from-env"}
    env.pop("COSIGN_PASSWORD", None)
    result = subprocess.run(
        ["pkgtool", "key", "generate"], cwd=tmp_path, env=env, capture_output=True, text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "pw-from-env" not in result.stdout + result.stderr
    key_path, pub_path = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    private = keys.load_private_key(key_path.read_bytes(), b"pw-from-env")
    public = keys.load_public_key(pub_path.read_bytes())
    assert private.public_key().public_numbers() == public.public_numbers()


def test_generate_refuses_to_overwrite_without_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "x")
    monkeypatch.delenv("PKGTOOL_PASSWORD", raising=False)
    prefix = str(tmp_path / "release")
    assert main(["key", "generate", "--output-prefix", prefix]) == 0
    first = (tmp_path / "release.key").read_bytes()
    assert main(["key", "generate", "--output-prefix", prefix]) == 1
    assert "release.key already exists; use --force" in capsys.readouterr().err
    assert (tmp_path / "release.key").read_bytes() == first
    assert main(["key", "generate", "--output-prefix", prefix, "--force"]) == 0
    assert (tmp_path / "release.key").read_bytes() != first
    keys.load_private_key((tmp_path / "release.key").read_bytes(), b"x")


def test_generate_needs_a_password_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in keys.PASSWORD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["key", "generate", "--output-prefix", str(tmp_path / "k")]) == 2
    assert "set PKGTOOL_PASSWORD" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_generate_rejects_missing_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PKGTOOL_PASSWORD", "x")
    assert main(["key", "generate", "--output-prefix", str(tmp_path / "nope" / "k")]) == 2
    assert "does not exist" in capsys.readouterr().err
