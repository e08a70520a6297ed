"""`pkgtool build` end to end: the real dockerd BuildKit, the real registry, a git checkout.

Every test works in its own git repository under tmp_path with its own ORG, so tags never
collide with other tests or earlier runs; the three-arch busybox base is pushed once per
module (tests/basekit.py).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import basekit
import pytest

from pkgtool.oci.registry import RegistryClient

pytestmark = pytest.mark.integration

UNAME = {"amd64": "x86_64", "arm64": "aarch64", "s390x": "s390x"}


@pytest.fixture(scope="module")
def base(registry: str) -> basekit.Base:
    return basekit.push_busybox_base(registry)


@pytest.fixture
def org() -> str:
    return f"pkgtool-test/b{secrets.token_hex(5)}"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "test@example.org")
    _git(root, "config", "user.name", "test")
    return root


@pytest.fixture
def client(registry: str) -> Iterator[RegistryClient]:
    with RegistryClient(registry) as c:
        yield c


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def _commit(root: Path) -> None:
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "change", "--allow-empty")


def pkgtool(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pkgtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PKGTOOL_PROGRESS": "plain", **(env or {})})


def write_package(root: Path, name: str, *, org: str, dockerfile: str, build_yml: str = "",
                  files: dict[str, str] | None = None) -> Path:
    directory = root / "pkg" / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "build.yml").write_text(f"image: {name}\norg: {org}\n{build_yml}")
    (directory / "Dockerfile").write_text(dockerfile)
    for rel, text in (files or {}).items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_text(text)
    return directory


def from_base(base: basekit.Base) -> str:
    return f"ARG PKGTOOL_REGISTRY=127.0.0.1:5000\nFROM {base.pinned('${PKGTOOL_REGISTRY}')} AS build\n"


def layer_files(client: RegistryClient, repository: str, manifest_digest: str) -> dict[str, bytes | str]:
    """path -> content (files) or "->target" (symlinks) / "dir", over every layer in order."""
    manifest = client.get_manifest(repository, manifest_digest)
    out: dict[str, bytes | str] = {}
    for layer in manifest.layers:
        blob = b"".join(client.iter_blob(repository, layer.digest))
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tf:
            for member in tf:
                if member.isfile():
                    data = tf.extractfile(member)
                    assert data is not None
                    out[member.name] = data.read()
                elif member.issym():
                    out[member.name] = "->" + member.linkname
                elif member.islnk():
                    out[member.name] = out[member.linkname]
                else:
                    out[member.name] = "dir"
    return out


def show_tag(root: Path, package: str) -> str:
    proc = pkgtool("show-tag", f"pkg/{package}", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# ----------------------------------------------------------------------------- the happy path


def test_three_arches_pushed_checked_per_arch_and_then_a_noop(
        repo: Path, base: basekit.Base, org: str, client: RegistryClient) -> None:
    df = from_base(base) + (
        "RUN mkdir -p /out && uname -m > /out/arch\n"
        "FROM scratch\n"
        "COPY --from=build /out/ /\n"
        "COPY . /ctx/\n"
    )
    pkg = write_package(repo, "hello", org=org, dockerfile=df,
                        build_yml="config:\n  capabilities: [CAP_NET_ADMIN]\n  binds: [/run:/run]\n",
                        files={"sp ace ü.txt": "odd\n", "a/x": "ax\n", "a-b": "ab\n", "secret.key": "never\n",
                               ".dockerignore": "secret.key\n"})
    os.symlink("a/x", pkg / "link")
    os.link(pkg / "a-b", pkg / "hard")
    _commit(repo)

    proc = pkgtool("build", "pkg/hello", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    tag = show_tag(repo, "hello").split(":", 1)[1]
    ref = proc.stdout.strip()
    assert ref.startswith(f"{client.registry}/{org}/hello:{tag}@sha256:")

    repository = f"{org}/hello"
    index = client.get_manifest(repository, tag)
    assert index.digest == ref.rsplit("@", 1)[1]
    assert [m.platform.architecture for m in index.manifests if m.platform] == ["amd64", "arm64", "s390x"]
    for entry in index.manifests:
        assert entry.platform is not None
        arch = entry.platform.architecture
        # The per-arch tag names the same manifest as the index entry.
        assert client.head_manifest(repository, f"{tag}-{arch}").digest == entry.digest
        files = layer_files(client, repository, entry.digest)
        assert files["arch"] == f"{UNAME[arch]}\n".encode(), arch  # RUN really ran as that arch
        assert files["ctx/sp ace ü.txt"] == b"odd\n" and files["ctx/a/x"] == b"ax\n"
        assert files["ctx/link"] == "->a/x" and files["ctx/hard"] == b"ab\n"
        assert "ctx/secret.key" not in files  # .dockerignore honoured
        manifest = client.get_manifest(repository, entry.digest)
        assert manifest.config is not None
        config = json.loads(client.get_blob_bytes(repository, manifest.config.digest, max_size=1 << 20))
        assert config["architecture"] == arch and config["created"] == "1970-01-01T00:00:00Z"
        labels = config["config"]["Labels"]
        assert json.loads(labels["org.mobyproject.config"]) == {"binds": ["/run:/run"], "capabilities": ["CAP_NET_ADMIN"]}
        # Nothing from git: digests must not depend on the commit or the clone.
        assert "org.opencontainers.image.revision" not in labels
        assert labels["org.opencontainers.image.version"] == tag

    # Nothing changed: one registry request, no BuildKit, no grpc import.
    probe = ("import sys; from pkgtool.cli import main; rc = main(['build', 'pkg/hello']); "
             "print('grpc-imported' if 'grpc' in sys.modules else 'grpc-not-imported'); sys.exit(rc)")
    again = subprocess.run([sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"})
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stderr
    assert again.stdout.splitlines() == [ref, "grpc-not-imported"]

    # Dry run says the same without building.
    dry = pkgtool("build", "pkg/hello", "--dry-run", cwd=repo)
    assert dry.returncode == 0 and "up to date" in dry.stdout


def test_same_digests_when_built_twice_without_cache(repo: Path, base: basekit.Base, org: str) -> None:
    # disable-cache: BuildKit really re-runs every step, so the second build's layers carry
    # new timestamps; the re-pack must erase them.
    df = from_base(base) + "RUN mkdir -p /out && echo built > /out/stamp && touch /out/now\nFROM scratch\nCOPY --from=build /out/ /\n"
    write_package(repo, "repro", org=org, dockerfile=df, build_yml="disable-cache: true\n")
    _commit(repo)
    runs = []
    for _ in range(2):
        proc = pkgtool("build", "pkg/repro", "--force", "--progress=json", cwd=repo)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout.splitlines()[-1]))
        time.sleep(1.1)  # a different second for every timestamp BuildKit writes
    assert runs[0]["built"] == ["amd64", "arm64", "s390x"]
    assert runs[0]["manifests"] == runs[1]["manifests"]
    assert runs[0]["digest"] == runs[1]["digest"]


def test_standalone_buildkitd_gives_the_same_digests_as_dockerd(
        repo: Path, base: basekit.Base, org: str, buildkitd: str) -> None:
    """Through buildkitd: the session over Control.Session, the OCI exporter into FileSend,
    the same re-pack; the images must be byte for byte the ones dockerd's BuildKit gives."""
    df = from_base(base) + "RUN mkdir -p /out && uname -m > /out/arch\nFROM scratch\nCOPY --from=build /out/ /\nCOPY . /ctx/\n"
    write_package(repo, "standalone", org=org, dockerfile=df, files={"a/x": "ax\n", "sp ace": "s\n"})
    _commit(repo)
    via_dockerd = pkgtool("build", "pkg/standalone", "--progress=json", cwd=repo)
    assert via_dockerd.returncode == 0, via_dockerd.stderr
    via_buildkitd = pkgtool("build", "pkg/standalone", "--force", "--no-push", "--builder", buildkitd,
                            "--progress=json", cwd=repo, timeout=900)
    assert via_buildkitd.returncode == 0, via_buildkitd.stderr
    assert "exporting to oci image format" in via_buildkitd.stderr  # it really was buildkitd
    first, second = (json.loads(p.stdout.splitlines()[-1]) for p in (via_dockerd, via_buildkitd))
    assert second["built"] == ["amd64", "arm64", "s390x"]
    assert second["manifests"] == first["manifests"] and second["digest"] == first["digest"]


# ----------------------------------------------------------------------------- dependencies


def test_dependency_order_and_stale_pins(repo: Path, base: basekit.Base, org: str, client: RegistryClient) -> None:
    write_package(repo, "lib", org=org, dockerfile=from_base(base) + "RUN mkdir /out && echo v1 > /out/lib\nFROM scratch\nCOPY --from=build /out/ /\n",
                  build_yml="arches: [amd64, arm64]\n")
    _commit(repo)
    lib_tag = show_tag(repo, "lib").split(":", 1)[1]
    # The app names lib by tag: both are built in one run, lib first.
    app_df = (f"ARG PKGTOOL_REGISTRY=127.0.0.1:5000\nFROM ${{PKGTOOL_REGISTRY}}/{org}/lib:{lib_tag} AS lib\n"
              "FROM scratch\nCOPY --from=lib /lib /from-lib\n")
    write_package(repo, "app", org=org, dockerfile=app_df, build_yml="arches: [amd64, arm64]\n")
    _commit(repo)
    proc = pkgtool("build", "pkg/app", cwd=repo)  # lib is found as app's dependency
    assert proc.returncode == 0, proc.stderr
    order = [line for line in proc.stderr.splitlines() if "building " in line]
    assert [line.split(":")[0] for line in order] == ["pkg/lib", "pkg/app"]
    app_digest = client.head_manifest(f"{org}/app", show_tag(repo, "app").split(":", 1)[1]).digest
    arm = next(m for m in client.get_manifest(f"{org}/app", app_digest).manifests if m.platform and m.platform.architecture == "arm64")
    assert layer_files(client, f"{org}/app", arm.digest)["from-lib"] == b"v1\n"

    # lib changes: app's tag changes with it, but app still names the old lib: refused.
    old_app = show_tag(repo, "app")
    (repo / "pkg/lib/Dockerfile").write_text((repo / "pkg/lib/Dockerfile").read_text().replace("v1", "v2"))
    _commit(repo)
    assert show_tag(repo, "app") != old_app
    stale = pkgtool("build", "pkg/app", cwd=repo)
    assert stale.returncode == 2
    assert "pkgtool update-hashes" in stale.stderr and "Traceback" not in stale.stderr


def test_cycle_and_other_bad_input(repo: Path, base: basekit.Base, org: str) -> None:
    write_package(repo, "a", org=org, dockerfile="FROM scratch\n", build_yml="depends: [../b]\n")
    write_package(repo, "b", org=org, dockerfile="FROM scratch\n", build_yml="depends: [../a]\n")
    write_package(repo, "arch", org=org, dockerfile="FROM scratch\n", build_yml="arches: [amd64, mips]\n")
    write_package(repo, "escape", org=org, dockerfile="FROM scratch\n", build_yml="dockerfile: ../a/Dockerfile\n")
    write_package(repo, "syntax", org=org, dockerfile="FROM scratch\nFLY away\n")
    (repo / "pkg/nobuild").mkdir()
    _commit(repo)
    cases = {
        ("pkg/a",): "dependency cycle: pkg/a -> pkg/b -> pkg/a",
        ("pkg/arch",): "build.yml:3",
        ("pkg/escape",): "outside the package directory",
        ("pkg/nobuild",): "no build.yml",
        ("pkg/missing",): "package directory not found",
        ("pkg/syntax",): "unknown instruction",
        ("pkg/syntax", "--platforms", "linux/mips"): "--platforms: unknown platform 'linux/mips'",
        ("pkg/syntax", "--registry", "127.0.0.1:1"): "127.0.0.1:1",
        ("pkg/syntax", "--builder", "unix:///nonexistent/buildkitd.sock"): "cannot reach BuildKit",
    }
    for args, expected in cases.items():
        proc = pkgtool("build", *args, cwd=repo, timeout=120)
        assert proc.returncode != 0, args
        lines = proc.stderr.strip().splitlines()
        assert expected in lines[-1], (args, proc.stderr)
        assert "Traceback" not in proc.stderr, args


# ----------------------------------------------------------------------------- failures


def test_failing_run_shows_step_arch_and_output_and_pushes_nothing(
        repo: Path, base: basekit.Base, org: str, client: RegistryClient) -> None:
    df = from_base(base) + 'RUN echo "before-the-failure-$(uname -m)" && [ "$(uname -m)" != s390x ]\nFROM scratch\nCOPY --from=build /bin/busybox /\n'
    write_package(repo, "broken", org=org, dockerfile=df)
    _commit(repo)
    proc = pkgtool("build", "pkg/broken", cwd=repo)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "linux/s390x" in last and "exit code: 1" in last and "before-the-failure-s390x" in last
    assert "Traceback" not in proc.stderr
    tag = show_tag(repo, "broken").split(":", 1)[1]
    # All or nothing: the arches that did build were not pushed either.
    for reference in (tag, f"{tag}-amd64", f"{tag}-arm64"):
        assert client.head_manifest(f"{org}/broken", reference) is None


def test_ctrl_c_cancels_and_pushes_nothing(repo: Path, base: basekit.Base, org: str, client: RegistryClient) -> None:
    df = from_base(base) + "RUN sleep 120\nFROM scratch\nCOPY --from=build /bin/busybox /\n"
    write_package(repo, "slow", org=org, dockerfile=df, build_yml="disable-cache: true\n")
    _commit(repo)
    # SIGINT as a terminal delivers it: a test run started in the background by a
    # non-interactive shell (`.ci/run &`) inherits SIGINT ignored, and an ignored SIGINT stays
    # ignored across exec (Python then installs no KeyboardInterrupt handler at all).
    # PYTHONFAULTHANDLER: should it hang, SIGABRT makes it print every thread's stack.
    proc = subprocess.Popen([sys.executable, "-m", "pkgtool", "build", "pkg/slow", "--progress=plain"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    started = time.monotonic()
    seen = ""
    while "RUN sleep 120" not in seen and time.monotonic() - started < 120:
        seen += proc.stderr.readline()
    assert "RUN sleep 120" in seen
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _out, err = proc.communicate(timeout=30)
        pytest.fail(f"Ctrl-C did not end the build within 60 s; its threads:\n{err[-12000:]}")
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert time.monotonic() - started < 100  # cancelled, not waited out
    tag = show_tag(repo, "slow").split(":", 1)[1]
    assert client.head_manifest(f"{org}/slow", tag) is None


def test_dirty_tree_gets_a_suffix_and_is_not_pushed_without_allow_dirty(
        repo: Path, base: basekit.Base, org: str) -> None:
    df = from_base(base) + "FROM scratch\nCOPY note /\n"
    write_package(repo, "dirty", org=org, dockerfile=df, files={"note": "committed\n"})
    _commit(repo)
    clean = show_tag(repo, "dirty")
    (repo / "pkg/dirty/note").write_text("edited\n")
    dirty = show_tag(repo, "dirty")
    assert dirty.endswith("-dirty") and dirty != clean + "-dirty"  # the content hash moved too
    refused = pkgtool("build", "pkg/dirty", cwd=repo)
    assert refused.returncode == 2 and "--allow-dirty" in refused.stderr
    local = pkgtool("build", "pkg/dirty", "--no-push", "--platforms", "linux/amd64", cwd=repo)
    assert local.returncode == 0, local.stderr
    assert local.stdout.strip().split("@")[0].endswith("-dirty")


def test_index_merge_keeps_arches_built_elsewhere(repo: Path, base: basekit.Base, org: str, client: RegistryClient) -> None:
    df = from_base(base) + "RUN mkdir /out && uname -m > /out/arch\nFROM scratch\nCOPY --from=build /out/ /\n"
    write_package(repo, "merge", org=org, dockerfile=df)
    _commit(repo)
    # "Machine one" builds amd64, "machine two" s390x: the index ends up with both.
    for platform in ("linux/amd64", "linux/s390x"):
        proc = pkgtool("build", "pkg/merge", "--platforms", platform, cwd=repo)
        assert proc.returncode == 0, proc.stderr
    tag = show_tag(repo, "merge").split(":", 1)[1]
    index = client.get_manifest(f"{org}/merge", tag)
    assert [m.platform.architecture for m in index.manifests if m.platform] == ["amd64", "s390x"]
    # `pkgtool manifest` rebuilds the same index from the per-arch tags.
    again = pkgtool("manifest", "pkg/merge", cwd=repo)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().endswith(index.digest)


# ----------------------------------------------------------------------------- signing


def test_build_sign_then_verify_with_a_policy(repo: Path, base: basekit.Base, org: str, tmp_path: Path) -> None:
    env = {"PKGTOOL_PASSWORD": "build-sign-test"}
    keys = tmp_path / "keys"
    keys.mkdir()
    assert pkgtool("key", "generate", "--output-prefix", str(keys / "k"), cwd=repo, env=env).returncode == 0
    layout = pkgtool("intoto", "layout", "--key", str(keys / "k.key"), "--functionary", str(keys / "k.pub"),
                     "--expires", "2099-01-01", "--output", str(keys / "root.layout"), cwd=repo, env=env)
    assert layout.returncode == 0, layout.stderr
    (keys / "policy.yml").write_text(
        "version: 1\nbuilders: [https://pkgtool.dev/builders/local]\n"
        "source_repositories: [https://example.org/pkgtool-test.git]\nrequire_revision: true\n"
        f"base_images: ['{base.registry}/{base.repository}']\n"
        "require:\n  signatures: [bundle, cosign]\n  attestations: [slsa-provenance, spdx]\n"
        "in_toto:\n  layout: root.layout\n  keys: [k.pub]\n  require: always\n"
    )
    _git(repo, "remote", "add", "origin", "https://token@example.org/pkgtool-test.git")
    df = from_base(base) + "RUN mkdir /out && uname -m > /out/arch\nFROM scratch\nCOPY --from=build /out/ /\n"
    write_package(repo, "signed", org=org, dockerfile=df, build_yml="arches: [amd64, s390x]\n")
    _commit(repo)

    # --key without --sign, and --sign with --no-push, are usage errors.
    assert pkgtool("build", "pkg/signed", "--key", str(keys / "k.key"), cwd=repo).returncode == 2
    assert pkgtool("build", "pkg/signed", "--sign", "--no-push", cwd=repo).returncode == 2
    wrong = pkgtool("build", "pkg/signed", "--sign", "--key", str(keys / "k.key"), cwd=repo,
                    env={"PKGTOOL_PASSWORD": "wrong"})
    assert wrong.returncode != 0 and "password" in wrong.stderr.lower() and "Traceback" not in wrong.stderr

    built = pkgtool("build", "pkg/signed", "--sign", "--key", str(keys / "k.key"), cwd=repo, env=env)
    assert built.returncode == 0, built.stderr
    assert "signed " in built.stderr
    ref = built.stdout.strip()
    assert "build-sign-test" not in built.stderr + built.stdout

    verified = pkgtool("verify", ref, "--key", str(keys / "k.pub"), "--policy", str(keys / "policy.yml"),
                       "--output", "json", cwd=repo)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["verified"] is True
    # The provenance records the commit and the clean clone URL; the image itself does not.
    text = json.dumps(report)
    assert "token@" not in text

    other = tmp_path / "other"
    other.mkdir()
    assert pkgtool("key", "generate", "--output-prefix", str(other / "o"), cwd=repo, env=env).returncode == 0
    denied = pkgtool("verify", ref, "--key", str(other / "o.pub"), cwd=repo)
    assert denied.returncode == 1 and "Traceback" not in denied.stderr

    # --sign on an up-to-date package adds what this signer has not attached, once.
    again = pkgtool("build", "pkg/signed", "--sign", "--key", str(keys / "k.key"), cwd=repo, env=env)
    assert again.returncode == 0 and "already signed and attested" in again.stderr, again.stderr
    cosigned = pkgtool("build", "pkg/signed", "--sign", "--key", str(other / "o.key"), cwd=repo, env=env)
    assert cosigned.returncode == 0, cosigned.stderr
    assert "is up to date" in cosigned.stderr and "item(s) attached by key" in cosigned.stderr
    accepted = pkgtool("verify", ref, "--key", str(other / "o.pub"), "--output", "json", cwd=repo)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "provenance (SLSA v1)" in {c["check"] for c in json.loads(accepted.stdout)["checks"]}
    twice = pkgtool("build", "pkg/signed", "--sign", "--key", str(other / "o.key"), cwd=repo, env=env)
    assert twice.returncode == 0 and "already signed and attested" in twice.stderr, twice.stderr

    # An auditor rebuilds from the recorded revision and gets the signed digests.
    rebuilt = pkgtool("verify", ref, "--key", str(keys / "k.pub"), "--rebuild", "--output", "json", cwd=repo, timeout=900)
    assert rebuilt.returncode == 0, rebuilt.stderr
    rebuild = json.loads(rebuilt.stdout)["rebuild"]
    assert [r["platform"] for r in rebuild] == ["linux/amd64", "linux/s390x"]
    assert all(r["signed"] == r["rebuilt"] for r in rebuild)

    # A package whose build is not deterministic is caught by the same check.
    noisy = from_base(base) + "RUN mkdir /out && head -c 16 /dev/urandom > /out/noise\nFROM scratch\nCOPY --from=build /out/ /\n"
    write_package(repo, "noisy", org=org, dockerfile=noisy, build_yml="arches: [amd64]\ndisable-cache: true\n")
    _commit(repo)
    built = pkgtool("build", "pkg/noisy", "--sign", "--key", str(keys / "k.key"), cwd=repo, env=env)
    assert built.returncode == 0, built.stderr
    caught = pkgtool("verify", built.stdout.strip(), "--key", str(keys / "k.pub"), "--rebuild", cwd=repo, timeout=900)
    assert caught.returncode == 1
    assert "rebuild check failed: not reproducible: linux/amd64" in caught.stderr.strip().splitlines()[-1]


def test_extra_sources_are_in_the_context(repo: Path, base: basekit.Base, org: str, client: RegistryClient) -> None:
    (repo / "pkg/lib").mkdir()
    (repo / "pkg/lib/shared.sh").write_text("echo shared v1\n")
    df = from_base(base) + "COPY shared.sh /out/shared.sh\nFROM scratch\nCOPY --from=build /out/ /\n"
    write_package(repo, "extra", org=org, dockerfile=df,
                  build_yml="arches: [amd64]\nextra-sources:\n  - ../lib/shared.sh:shared.sh\n")
    _commit(repo)
    first = pkgtool("build", "pkg/extra", cwd=repo)
    assert first.returncode == 0, first.stderr
    (repo / "pkg/lib/shared.sh").write_text("echo shared v2\n")
    _commit(repo)
    second = pkgtool("build", "pkg/extra", cwd=repo)
    assert second.returncode == 0, second.stderr
    assert first.stdout.split("@")[0] != second.stdout.split("@")[0]  # the extra source is hashed
    index = client.get_manifest(f"{org}/extra", second.stdout.strip().rsplit("@", 1)[1])
    assert layer_files(client, f"{org}/extra", index.manifests[0].digest)["shared.sh"] == b"echo shared v2\n"
