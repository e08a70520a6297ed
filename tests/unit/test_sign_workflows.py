"""The GitHub Actions workflows: structure, triggers, permissions, and that every pkgtool
command and flag they run exists (they cannot run here, so they are checked statically)."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pkgtool.cli import build_parser
from pkgtool.sign.policy import load_policy

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


def _load(name: str) -> dict[Any, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(document, dict)
    # YAML 1.1 reads the key `on` as the boolean True; GitHub reads it as "on".
    if True in document:
        document["on"] = document.pop(True)
    return document


def _runs(document: dict[Any, Any]) -> Iterator[str]:
    for job in document["jobs"].values():
        for step in job["steps"]:
            if "run" in step:
                yield step["run"]


def _invocations(script: str) -> Iterator[list[str]]:
    """Each ``pkgtool …`` command line in a shell script (continuations joined)."""
    joined = re.sub(r"\\\n\s*", " ", script)
    # Command substitutions are commands too: `ref=$(pkgtool show-tag …)`.
    joined = re.sub(r"\$\(|\)", "\n", joined)
    for line in joined.splitlines():
        for part in re.split(r"\|\||&&|;|\|", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            if "pkgtool" in words:
                yield words[words.index("pkgtool") + 1:]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _check_invocation(words: list[str]) -> None:
    parser = build_parser()
    while words and words[0].startswith("-"):  # global options
        assert words[0].split("=")[0] in _options(parser), words
        words = words[2:] if words[0] == "--cache-dir" else words[1:]
    commands = _subparsers(parser)
    assert words and words[0] in commands, f"`pkgtool {' '.join(words)}`: no such command in `pkgtool --help`"
    command, parser = words[0], commands[words[0]]
    rest = words[1:]
    if (nested := _subparsers(parser)) and rest and not rest[0].startswith("-"):
        assert rest[0] in nested, f"`pkgtool {command} {rest[0]}`: no such subcommand"
        parser, rest = nested[rest[0]], rest[1:]
    for word in rest:
        if word.startswith("--"):
            flag = word.split("=")[0]
            assert flag in _options(parser), f"`pkgtool {command}`: no option {flag}"


@pytest.mark.parametrize("name", ["ci.yml", "publish.yml"])
def test_workflows_are_valid_and_name_real_commands(name: str) -> None:
    document = _load(name)
    assert document["name"] and document["jobs"]
    for job in document["jobs"].values():
        assert job["runs-on"] and job["steps"]
        assert job.get("timeout-minutes"), "a stuck job must not run for six hours"
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), step
            if "uses" in step:
                # pinned to a commit (the tag is a comment: tests/unit/test_workflow_lint.py)
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    invocations = [words for script in _runs(document) for words in _invocations(script)]
    if name == "publish.yml":
        assert invocations
    for words in invocations:
        _check_invocation(words)


def test_ci_runs_the_readme_test_command_with_least_privilege() -> None:
    document = _load("ci.yml")
    assert set(document["on"]) == {"push", "pull_request"}
    assert document["permissions"] == {"contents": "read"}
    (job,) = document["jobs"].values()
    assert "permissions" not in job
    assert [step["run"] for step in job["steps"] if step.get("run", "").strip() == "scripts/test"]
    assert (REPO / "scripts" / "test").exists()


def _job_commands(job: dict[Any, Any]) -> list[list[str]]:
    return [words for step in job["steps"] if "run" in step for words in _invocations(step["run"])]


def test_publish_signs_keyless_on_main_only() -> None:
    document = _load("publish.yml")
    assert document["on"] == {"push": {"branches": ["main"]}}
    assert document["permissions"] == {}
    assert document["concurrency"]["cancel-in-progress"] is False
    jobs = document["jobs"]
    writers = {"contents": "read", "packages": "write", "id-token": "write"}
    for name in ("base", "packages", "index"):
        # A job-level block replaces the workflow's: everything the job needs is listed here.
        assert jobs[name]["permissions"] == writers, name
    # Verification only reads.
    assert jobs["verify"]["permissions"] == {"contents": "read", "packages": "read"}
    commands = [words for job in jobs.values() for words in _job_commands(job)]
    signing = [w for w in commands if w and w[0] in ("build", "manifest") and "--sign" in w]
    assert signing and all("--key" not in w for w in signing), "keyless: --sign without --key"
    verifies = [w for w in _job_commands(jobs["verify"]) if w and w[0] == "verify"]
    assert verifies
    for words in verifies:
        assert words[words.index("--policy") + 1] == "signing/policy.yml"
        assert "--identity" in words and "--issuer" in words
    verify_env = jobs["verify"]["env"]
    assert verify_env["SIGNER_ISSUER"] == GITHUB_ISSUER
    assert verify_env["SIGNER_IDENTITY"] == "${{ github.server_url }}/${{ github.workflow_ref }}"


def test_publish_shards_per_arch_then_merges_one_complete_index() -> None:
    """A job per arch (native arm64, emulated s390x) pushes and signs only TAG-ARCH; one
    job after all of them merges and signs the index; verification comes last."""
    jobs = _load("publish.yml")["jobs"]
    packages = jobs["packages"]
    assert packages["needs"] == "base"
    matrix = {entry["arch"]: entry["runner"] for entry in packages["strategy"]["matrix"]["include"]}
    assert set(matrix) == {"amd64", "arm64", "s390x"}
    assert matrix["arm64"].endswith("-arm"), "arm64 builds on GitHub's native arm64 runners"
    assert matrix["s390x"] == matrix["amd64"] == "ubuntu-latest", "no s390x runners: emulated on x86"
    assert packages["runs-on"] == "${{ matrix.runner }}"
    builds = [w for w in _job_commands(packages) if w and w[0] == "build"]
    assert len(builds) == 1
    (build,) = builds
    assert "--no-index" in build and "--sign" in build
    assert build[build.index("--platforms") + 1] == "linux/$ARCH"
    assert packages["steps"][-1]["env"]["ARCH"] == "${{ matrix.arch }}"
    assert "--cache-from" in build and "--cache-to" in build
    # Every package build anywhere in the workflow leaves the index to the index job.
    everywhere = [w for job in jobs.values() for w in _job_commands(job) if w and w[0] == "build"]
    assert all("--no-index" in w for w in everywhere)

    index = jobs["index"]
    assert index["needs"] == "packages"
    (merge,) = [w for w in _job_commands(index) if w and w[0] == "manifest"]
    assert "--complete" in merge and "--sign" in merge and merge[merge.index("--all") + 1] == "pkg/"
    assert jobs["verify"]["needs"] == "index"


def test_publish_identity_is_what_the_policy_trusts() -> None:
    policy = load_policy(REPO / "signing" / "policy.yml")
    (identity,) = policy.identities
    assert identity.issuer == GITHUB_ISSUER
    # github.server_url + "/" + github.workflow_ref for this repository's publish.yml on main.
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+/\.github/workflows/publish\.yml@refs/heads/main",
                        identity.identity)
    assert identity.identity in policy.builders


def test_publish_never_puts_secrets_on_a_command_line() -> None:
    text = (WORKFLOWS / "publish.yml").read_text()
    for job in _load("publish.yml")["jobs"].values():
        for step in job["steps"]:
            assert "${{ secrets." not in step.get("run", ""), "secrets go through env, never into the script text"
            assert "${{ matrix." not in step.get("run", ""), "matrix values go through env, not into the script"
    assert "docker login" not in text or "--password-stdin" in text
    assert "set -x" not in text
