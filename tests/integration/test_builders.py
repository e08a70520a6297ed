"""Several builders, TLS, the registry build cache and concurrent per-arch publishing, end to
end against the real stack: the stack's dockerd and a second dockerd (tests/dockerdkit.py,
one per session) as two BuildKit builders, and the real registry.

What ran where is checked from the builders' side: each daemon's own build-cache records
(``docker system df -v``).  The test Dockerfiles build a different stage per arch
(``FROM build-${TARGETARCH}``) whose RUN step carries the arch and a per-test token, so a
record naming ``marker-arm64-<token>`` exists only on the daemon that built arm64.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import basekit
import dockerdkit
import pytest

from pkgtool import settings
from pkgtool.oci.registry import RegistryClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base(registry: str) -> basekit.Base:
    return basekit.push_busybox_base(registry)


@pytest.fixture
def client(registry: str) -> Iterator[RegistryClient]:
    with RegistryClient(registry) as c:
        yield c


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    for args in (("init", "-q"), ("config", "user.email", "t@example.org"), ("config", "user.name", "t")):
        _git(root, *args)
    return root


@pytest.fixture
def org() -> str:
    return f"pkgtool-test/m{secrets.token_hex(5)}"


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def commit(root: Path) -> None:
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "change", "--allow-empty")


def pkgtool(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # No builders from the environment or a user's config file unless a test sets them.
    clean = {k: v for k, v in os.environ.items() if k not in ("PKGTOOL_BUILDERS", "BUILDKIT_HOST")}
    clean["PKGTOOL_BUILDERS_CONFIG"] = str(cwd / "no-builders.toml")
    return subprocess.run([sys.executable, "-m", "pkgtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**clean, "PKGTOOL_PROGRESS": "plain", **(env or {})})


def marker(arch: str, token: str) -> str:
    return f"marker-{arch}-{token}"


def per_arch_package(root: Path, name: str, *, org: str, base: basekit.Base, token: str, arches: tuple[str, ...]) -> Path:
    """A package whose RUN step differs per arch (a stage per arch), so each builder's cache
    records say which arch it built."""
    stages = "".join(
        f"FROM {base.pinned('${PKGTOOL_REGISTRY}')} AS build-{arch}\n"
        f"RUN mkdir /out && echo {marker(arch, token)} > /out/who && uname -m > /out/arch\n"
        for arch in arches
    )
    dockerfile = ("ARG PKGTOOL_REGISTRY=127.0.0.1:5000\n" + stages
                  + "FROM build-${TARGETARCH} AS build\nFROM scratch\nCOPY --from=build /out/ /\n")
    directory = root / "pkg" / name
    directory.mkdir(parents=True)
    (directory / "build.yml").write_text(f"image: {name}\norg: {org}\narches: [{', '.join(arches)}]\n")
    (directory / "Dockerfile").write_text(dockerfile)
    return directory


def summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert isinstance(result, dict)
    return result


def cache_descriptions(host: str) -> list[str]:
    """The BuildKit cache records of the dockerd at ``host``, as ``docker system df -v``
    lists them: read from the daemon itself, not from anything pkgtool printed."""
    import docker

    daemon = docker.DockerClient(base_url=host, timeout=300)
    try:
        return [str(record.get("Description", "")) for record in daemon.df().get("BuildCache") or []]
    finally:
        daemon.close()


def ran(descriptions: list[str], text: str) -> bool:
    """Did this builder execute a RUN step whose command contains ``text``?"""
    return any("exec" in d and text in d for d in descriptions)


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- a builder per platform


def test_each_platform_runs_on_its_builder_with_the_digests_of_one_builder(
        repo: Path, base: basekit.Base, org: str, docker_host: str, second_dockerd: dockerdkit.Dockerd) -> None:
    token = secrets.token_hex(4)
    per_arch_package(repo, "where", org=org, base=base, token=token, arches=("amd64", "arm64"))
    commit(repo)

    multi = pkgtool("build", "pkg/where", "--builders", f"linux/arm64=docker://{second_dockerd.host}",
                    "--progress=json", cwd=repo)
    spread = summary(multi)
    assert spread["builders"] == {"amd64": "dockerd", "arm64": f"dockerd {second_dockerd.host}"}
    # Progress names the builder of every step.
    groups = {json.loads(line).get("group") for line in multi.stderr.splitlines() if line.startswith("{")}
    assert {"where amd64 on dockerd", f"where arm64 on dockerd {second_dockerd.host}"} <= groups

    # The builders' own records: arm64 ran on the second daemon, amd64 on the stack's.
    second, stack = cache_descriptions(second_dockerd.host), cache_descriptions(docker_host)
    assert ran(second, marker("arm64", token)) and not ran(second, marker("amd64", token))
    assert ran(stack, marker("amd64", token)) and not ran(stack, marker("arm64", token))

    # One builder for everything (the stack's dockerd, arm64 emulated): the same digests.
    single = summary(pkgtool("build", "pkg/where", "--force", "--progress=json", cwd=repo))
    assert single["builders"] == {"amd64": "dockerd", "arm64": "dockerd"}
    assert ran(cache_descriptions(docker_host), marker("arm64", token))
    assert single["manifests"] == spread["manifests"] and single["digest"] == spread["digest"]


def test_tls_builder_from_builders_toml_and_a_wrong_ca_fails_naming_it(
        repo: Path, base: basekit.Base, org: str, tmp_path: Path, second_dockerd: dockerdkit.Dockerd,
        client: RegistryClient) -> None:
    tls = second_dockerd.tls
    assert tls is not None
    token = secrets.token_hex(4)
    per_arch_package(repo, "tls", org=org, base=base, token=token, arches=("amd64",))
    commit(repo)
    address = f"docker://{second_dockerd.tcp_host}"
    config = tmp_path / "conf" / "builders.toml"
    config.parent.mkdir()
    (config.parent / "certs").symlink_to(tls.ca.parent)  # relative paths are relative to the file
    config.write_text(f'[builders."linux/amd64"]\naddress = "{address}"\ntlscacert = "certs/ca.pem"\n'
                      'tlscert = "certs/client.pem"\ntlskey = "certs/client-key.pem"\n')
    built = summary(pkgtool("build", "pkg/tls", "--progress=json", cwd=repo,
                            env={"PKGTOOL_BUILDERS_CONFIG": str(config)}))
    assert built["builders"] == {"amd64": f"dockerd {second_dockerd.tcp_host}"}
    assert ran(cache_descriptions(second_dockerd.host), marker("amd64", token))

    # The same builder with the flags, but trusting another CA: refused, named, nothing pushed.
    other_ca, _cert, _key = dockerdkit.make_tls(tmp_path / "other")
    (repo / "pkg/tls/note").write_text("a new tag\n")
    commit(repo)
    refused = pkgtool("build", "pkg/tls", "--builders", f"linux/amd64={address}", "--tlscacert", str(other_ca.ca),
                      "--tlscert", str(tls.cert), "--tlskey", str(tls.key), cwd=repo)
    assert refused.returncode == 1
    line = last_line(refused)
    assert line.startswith(f"pkgtool: error: linux/amd64: builder dockerd {second_dockerd.tcp_host}, from --builders: ")
    assert "certificate verify failed" in line, line
    assert "Traceback" not in refused.stderr
    key_body = "".join(tls.key.read_text().splitlines()[1:-1])
    assert key_body[:40] not in refused.stderr + refused.stdout
    tag = pkgtool("show-tag", "pkg/tls", cwd=repo).stdout.strip().split(":", 1)[1]
    assert client.head_manifest(f"{org}/tls", tag) is None

    # An unreadable key file: a usage error before anything connects.
    missing = pkgtool("build", "pkg/tls", "--builders", f"linux/amd64={address}", "--tlscert", str(tls.cert),
                      "--tlskey", str(tmp_path / "absent-key.pem"), cwd=repo)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert last_line(missing) == (f"pkgtool: error: cannot read the TLS client key {tmp_path / 'absent-key.pem'}: "
                                  "No such file or directory")


def test_unreachable_builder_fails_its_arch_cleanly_and_pushes_nothing(
        repo: Path, base: basekit.Base, org: str, client: RegistryClient, tmp_path: Path) -> None:
    per_arch_package(repo, "down", org=org, base=base, token="x", arches=("amd64", "arm64"))
    commit(repo)
    proc = pkgtool("build", "pkg/down", "--builders", "linux/arm64=tcp://127.0.0.1:1", cwd=repo)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert last_line(proc) == ("pkgtool: error: linux/arm64: builder tcp://127.0.0.1:1, from --builders: "
                               "cannot reach BuildKit at tcp://127.0.0.1:1: Connection refused")
    tag = pkgtool("show-tag", "pkg/down", cwd=repo).stdout.strip().split(":", 1)[1]
    for reference in (tag, f"{tag}-amd64", f"{tag}-arm64"):
        assert client.head_manifest(f"{org}/down", reference) is None

    # Malformed values, wherever they come from: one line, exit 2, before any build.
    config = tmp_path / "builders.toml"
    config.write_text('[builders]\n"linux/arm64" = "tcp://arm-host:1234"\n"linux/arm64" = "tcp://b:1"\n')
    cases = [
        ((), {"PKGTOOL_BUILDERS": "linux/arm64"}, "$PKGTOOL_BUILDERS: 'linux/arm64' is not PLATFORM=ADDRESS"),
        (("--builders", "linux/arm64=ssh://h"), {}, "--builders: 'ssh://h' is not a builder address"),
        (("--builder", "tcp://nohost"), {}, "--builder: 'tcp://nohost' is not a builder address"),
        ((), {"PKGTOOL_BUILDERS_CONFIG": str(config)}, f"{config}:3: not valid TOML"),
        (("--cache-from", "127.0.0.1:5000/c:tag"), {}, "--cache-from: '127.0.0.1:5000/c:tag': give a repository"),
    ]
    for args, env, expected in cases:
        bad = pkgtool("build", "pkg/down", *args, cwd=repo, env=env)
        assert bad.returncode == 2, (args, bad.stderr)
        assert last_line(bad).startswith(f"pkgtool: error: {expected}"), (args, bad.stderr)
        assert "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- one tag, several machines


def test_two_processes_building_different_arches_end_with_complete_indexes(
        repo: Path, org: str, client: RegistryClient, second_dockerd: dockerdkit.Dockerd) -> None:
    """Two `pkgtool build --platforms` at once, one per arch and builder, over the same six
    packages: every index ends up listing both arches.  The packages have no RUN step, so
    both processes reach each index at nearly the same moment (the interleaving that loses
    an arch to a plain read-modify-write is replayed deterministically in
    tests/unit/test_index_merge.py)."""
    names = [f"r{i}" for i in range(6)]
    for name in names:
        directory = repo / "pkg" / name
        directory.mkdir(parents=True)
        (directory / "build.yml").write_text(f"image: {name}\norg: {org}\narches: [amd64, arm64]\n")
        (directory / "Dockerfile").write_text("FROM scratch\nCOPY note /\n")
        (directory / "note").write_text(f"{name}\n")
    commit(repo)
    env = {k: v for k, v in os.environ.items() if k not in ("PKGTOOL_BUILDERS", "BUILDKIT_HOST")}
    env.update(PKGTOOL_BUILDERS_CONFIG=str(repo / "none.toml"), PKGTOOL_PROGRESS="plain")
    packages = [f"pkg/{n}" for n in names]
    commands = [
        ["build", *packages, "--platforms", "linux/amd64", "--jobs", "6"],
        ["build", *packages, "--platforms", "linux/arm64", "--jobs", "6",
         "--builders", f"linux/arm64=docker://{second_dockerd.host}"],
    ]
    running = [subprocess.Popen([sys.executable, "-m", "pkgtool", *c], cwd=repo, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    for proc in running:
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    for name in names:
        tag = pkgtool("show-tag", f"pkg/{name}", cwd=repo).stdout.strip().split(":", 1)[1]
        index = client.get_manifest(f"{org}/{name}", tag)
        assert [m.platform.architecture for m in index.manifests if m.platform] == ["amd64", "arm64"], name
        for entry in index.manifests:
            assert entry.platform is not None
            assert client.head_manifest(f"{org}/{name}", f"{tag}-{entry.platform.architecture}").digest == entry.digest


def test_sharded_publish_pushes_arches_then_one_complete_signed_index(
        repo: Path, base: basekit.Base, org: str, client: RegistryClient, tmp_path: Path,
        second_dockerd: dockerdkit.Dockerd) -> None:
    """publish.yml's flow: a job per arch (`build --no-index --sign`), then one job merges
    the index (`manifest --complete --sign`), then `verify`."""
    env = {"PKGTOOL_PASSWORD": "shard-test"}
    keys = tmp_path / "keys"
    keys.mkdir()
    assert pkgtool("key", "generate", "--output-prefix", str(keys / "k"), cwd=repo, env=env).returncode == 0
    per_arch_package(repo, "shard", org=org, base=base, token="s", arches=("amd64", "arm64"))
    commit(repo)
    tag = pkgtool("show-tag", "pkg/shard", cwd=repo).stdout.strip().split(":", 1)[1]
    repository = f"{org}/shard"
    sign = ("--sign", "--key", str(keys / "k.key"))

    amd64 = pkgtool("build", "pkg/shard", "--no-index", "--platforms", "linux/amd64", *sign, cwd=repo, env=env)
    assert amd64.returncode == 0, amd64.stderr
    assert amd64.stdout.strip().startswith(f"{client.registry}/{repository}:{tag}-amd64@sha256:")
    assert client.head_manifest(repository, tag) is None  # no index from a shard
    early = pkgtool("manifest", "pkg/shard", "--complete", cwd=repo)
    assert early.returncode == 1 and f"lacks {tag}-arm64" in last_line(early) and "no index was written" in last_line(early)
    assert client.head_manifest(repository, tag) is None

    arm64 = pkgtool("build", "pkg/shard", "--no-index", "--platforms", "linux/arm64", *sign,
                    "--builders", f"linux/arm64=docker://{second_dockerd.host}", cwd=repo, env=env)
    assert arm64.returncode == 0, arm64.stderr
    merged = pkgtool("manifest", "pkg/shard", "--complete", *sign, cwd=repo, env=env)
    assert merged.returncode == 0, merged.stderr
    ref = merged.stdout.strip()
    index = client.get_manifest(repository, tag)
    assert ref == f"{client.registry}/{repository}:{tag}@{index.digest}"
    assert [m.platform.architecture for m in index.manifests if m.platform] == ["amd64", "arm64"]
    assert "signed " in merged.stderr

    verified = pkgtool("verify", ref, "--key", str(keys / "k.pub"), "--output", "json", cwd=repo)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["verified"] is True
    # Merging again changes nothing and signs nothing again.
    again = pkgtool("manifest", "pkg/shard", "--complete", *sign, cwd=repo, env=env)
    assert again.returncode == 0 and again.stdout.strip() == ref and "not re-signed" in again.stderr


# ----------------------------------------------------------------------------- the registry cache


def test_registry_cache_round_trip_on_an_emptied_builder_keeps_the_digests(
        repo: Path, base: basekit.Base, org: str, client: RegistryClient,
        second_dockerd: dockerdkit.Dockerd) -> None:
    token = secrets.token_hex(4)
    per_arch_package(repo, "cached", org=org, base=base, token=token, arches=("arm64",))
    commit(repo)
    cache = f"{settings.registry()}/pkgtool-test/cache-{token}"
    builder = ("--builder", f"docker://{second_dockerd.host}")

    cold = summary(pkgtool("build", "pkg/cached", *builder, "--cache-to", cache, "--progress=json", cwd=repo))
    assert ran(cache_descriptions(second_dockerd.host), marker("arm64", token))
    # The cache image is in the registry, with BuildKit's inline cache records in its config.
    cache_repository = f"pkgtool-test/cache-{token}/{org}/cached"
    cache_manifest = client.get_manifest(cache_repository, "cache-arm64")
    assert cache_manifest.config is not None
    config = json.loads(client.get_blob_bytes(cache_repository, cache_manifest.config.digest, max_size=1 << 22))
    assert config.get("moby.buildkit.cache.v0")

    second_dockerd.prune_build_cache()  # an empty local BuildKit cache
    warm = pkgtool("build", "pkg/cached", "--force", *builder, "--cache-from", cache, "--progress=json", cwd=repo)
    result = summary(warm)
    assert result["manifests"] == cold["manifests"] and result["digest"] == cold["digest"]
    steps = {(r["step"], r["state"]) for r in map(json.loads, filter(lambda s: s.startswith("{"), warm.stderr.splitlines()))
             if r.get("type") == "step"}
    run_step = next(name for name, _state in steps if marker("arm64", token) in name)
    assert (run_step, "cached") in steps and (run_step, "done") not in steps
    # From the builder's side: the RUN never executed there; the result came from the cache.
    after = cache_descriptions(second_dockerd.host)
    assert not ran(after, marker("arm64", token))
    assert any("COPY /out/ /" in d for d in after), after


def test_standalone_buildkitd_for_one_platform_exports_a_max_registry_cache(
        repo: Path, base: basekit.Base, org: str, client: RegistryClient, buildkitd: str) -> None:
    """With a standalone buildkitd (skipped when none is installed: Debian packages none):
    arm64 goes to it (Control.Session, the oci exporter), amd64 stays on dockerd; buildkitd
    pushes a type=registry mode=max cache itself, dockerd an inline one through pkgtool; the
    digests are those of one builder."""
    token = secrets.token_hex(4)
    per_arch_package(repo, "mixed", org=org, base=base, token=token, arches=("amd64", "arm64"))
    commit(repo)
    cache = f"{settings.registry()}/pkgtool-test/cache-{token}"
    mixed = pkgtool("build", "pkg/mixed", "--builders", f"linux/arm64={buildkitd}", "--cache-to", cache,
                    "--progress=json", cwd=repo, timeout=900)
    spread = summary(mixed)
    assert spread["builders"] == {"amd64": "dockerd", "arm64": buildkitd}
    assert "exporting to oci image format" in mixed.stderr
    cache_repository = f"pkgtool-test/cache-{token}/{org}/mixed"
    # buildkitd's own registry cache: an index whose config is BuildKit's cache config.
    arm64_cache = client.get_manifest(cache_repository, "cache-arm64")
    assert any(m.media_type == "application/vnd.buildkit.cacheconfig.v0" for m in arm64_cache.manifests)
    amd64_cache = client.get_manifest(cache_repository, "cache-amd64")
    assert amd64_cache.config is not None and not amd64_cache.is_index
    single = summary(pkgtool("build", "pkg/mixed", "--force", "--progress=json", cwd=repo))
    assert single["manifests"] == spread["manifests"] and single["digest"] == spread["digest"]
