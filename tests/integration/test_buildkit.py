"""pkgtool's BuildKit client against the real dockerd (and its registry for FROM bases)."""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import basekit
import pytest

from pkgtool.buildkit import (
    BuildCancelled,
    Builder,
    BuildError,
    LocalExport,
    MobyExport,
    StatusEvent,
    TarExport,
    VertexEvent,
    open_builder,
)
from pkgtool.errors import PkgtoolError

pytestmark = pytest.mark.integration

ARCHES = ("amd64", "arm64", "s390x")
UNAME = {"amd64": "x86_64", "arm64": "aarch64", "s390x": "s390x"}


@pytest.fixture(scope="module")
def builder(docker_host: str) -> Iterator[Builder]:
    with open_builder(f"docker://{docker_host}") as b:
        yield b


# ------------------------------------------------------------------------- a busybox base


@pytest.fixture(scope="module")
def busybox_base(registry: str) -> str:
    """A three-arch busybox image in the local registry (BuildKit resolves FROM there)."""
    return basekit.push_busybox_base(registry).tagged


# ------------------------------------------------------------------------- helpers


def make_context(root: Path) -> Path:
    ctx = root / "ctx"
    (ctx / "a").mkdir(parents=True)
    (ctx / "a" / "x").write_text("in a/x\n")
    (ctx / "a-b").write_text("dash\n")
    (ctx / "sp ace ü €.txt").write_text("odd name\n")
    (ctx / "big.bin").write_bytes(os.urandom(200_000))
    (ctx / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    (ctx / "tool.sh").chmod(0o755)
    (ctx / "empty").mkdir()
    os.symlink("a/x", ctx / "link")
    os.symlink("/nonexistent/target", ctx / "dangling")
    os.link(ctx / "a-b", ctx / "hard")
    return ctx


def dockerfile(root: Path, text: str) -> Path:
    path = root / "df" / "Dockerfile"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """relpath -> (kind, content or link target), for comparing file trees."""
    out: dict[str, tuple[str, str]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", "")
        else:
            out[rel] = (f"file {stat.S_IMODE(st.st_mode):o}", hashlib.sha256(path.read_bytes()).hexdigest())
    return out


# ------------------------------------------------------------------------- tests


def test_list_workers_reports_the_emulated_platforms(builder: Builder) -> None:
    platforms = builder.platforms()
    for platform in ("linux/amd64", "linux/arm64", "linux/s390x"):
        assert platform in platforms


def test_context_round_trips_through_a_local_export(builder: Builder, tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    events: list[StatusEvent] = []
    out = tmp_path / "out"
    result = builder.solve_dockerfile(
        context=ctx, dockerfile=dockerfile(tmp_path, "FROM scratch\nCOPY . /\n"),
        platform="linux/amd64", export=LocalExport(out), on_status=events.append,
    )
    assert tree(out) == tree(ctx)
    assert (out / "hard").stat().st_ino == (out / "a-b").stat().st_ino
    assert result.bytes_sent >= 200_000
    states = {(e.name, e.state) for e in events if isinstance(e, VertexEvent)}
    assert ("[1/1] COPY . /", "completed") in states or ("[1/1] COPY . /", "cached") in states


def test_tar_export_and_transfer_reuse(builder: Builder, tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    df = dockerfile(tmp_path, "FROM scratch\nCOPY . /\n")
    first = builder.solve_dockerfile(context=ctx, dockerfile=df, platform="linux/arm64", export=TarExport(tmp_path / "1.tar"))
    with tarfile.open(tmp_path / "1.tar") as tf:
        members = {m.name.rstrip("/"): m for m in tf.getmembers()}
        assert members["link"].issym() and members["link"].linkname == "a/x"
        assert members["hard"].islnk() and members["hard"].linkname == "a-b"
        assert tf.extractfile("sp ace ü €.txt").read() == b"odd name\n"  # type: ignore[union-attr]
    assert set(members) == set(tree(ctx))
    assert first.bytes_sent >= 200_000
    # Same context dir, one file changed: only that file is sent again (stable shared key).
    (ctx / "a-b").write_text("changed\n")
    second = builder.solve_dockerfile(context=ctx, dockerfile=df, platform="linux/arm64", export=TarExport(tmp_path / "2.tar"))
    assert second.bytes_sent == len("changed\n")
    with tarfile.open(tmp_path / "2.tar") as tf:
        assert tf.extractfile("a-b").read() == b"changed\n"  # type: ignore[union-attr]


def test_run_on_three_arches_concurrently_and_past_health_checks(builder: Builder, busybox_base: str, tmp_path: Path) -> None:
    """Each RUN takes > 3 s, so the session must survive several health checks before export."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    df = dockerfile(tmp_path, f"FROM {busybox_base}\nRUN sleep 3.5 && uname -m > /arch\n")
    errors: list[BaseException] = []

    def build(arch: str) -> None:
        try:
            builder.solve_dockerfile(
                context=ctx, dockerfile=df, platform=f"linux/{arch}", export=LocalExport(tmp_path / arch),
                no_cache=True, network="none",
            )
        except BaseException as exc:
            errors.append(exc)

    start = time.monotonic()
    threads = [threading.Thread(target=build, args=(arch,)) for arch in ARCHES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert time.monotonic() - start < 3 * 3.5 + 20  # concurrent, not one after another
    for arch in ARCHES:
        assert (tmp_path / arch / "arch").read_text().strip() == UNAME[arch]


def test_failing_run_names_step_platform_and_output(builder: Builder, busybox_base: str, tmp_path: Path) -> None:
    df = dockerfile(tmp_path, f"FROM {busybox_base}\nRUN echo before-the-failure && exit 3\n")
    (tmp_path / "ctx").mkdir()
    with pytest.raises(BuildError) as info:
        builder.solve_dockerfile(context=tmp_path / "ctx", dockerfile=df, platform="linux/arm64",
                                 export=TarExport(tmp_path / "o.tar"), no_cache=True)
    err = info.value
    assert err.platform == "linux/arm64"
    assert "RUN echo before-the-failure" in err.step
    assert "before-the-failure" in err.log_tail
    assert "exit code: 3" in str(err) and "linux/arm64" in str(err)


def test_bad_dockerfile_is_a_clear_error(builder: Builder, tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    df = dockerfile(tmp_path, "FROMM scratch\n")
    with pytest.raises(PkgtoolError, match=r"linux/amd64 failed.*(?i:unknown instruction)"):
        builder.solve_dockerfile(context=tmp_path / "ctx", dockerfile=df, platform="linux/amd64",
                                 export=TarExport(tmp_path / "o.tar"))


def test_moby_export_lands_in_the_image_store(builder: Builder, docker_host: str, tmp_path: Path) -> None:
    import docker

    ctx = make_context(tmp_path)
    name = f"pkgtool-test/bk-moby:{os.urandom(4).hex()}"
    df = dockerfile(tmp_path, "FROM scratch\nCOPY a /a\n")
    builder.solve_dockerfile(context=ctx, dockerfile=df, platform="linux/s390x", export=MobyExport(name),
                             labels={"org.example.test": "yes"})
    client = docker.DockerClient(base_url=docker_host)
    try:
        image = client.images.get(name)
        assert image.attrs["Architecture"] == "s390x"
        assert image.labels["org.example.test"] == "yes"
    finally:
        client.images.remove(name, force=True)
        client.close()


def test_session_over_control_stream(docker_host: str, tmp_path: Path) -> None:
    """The buildkitd session transport (Control.Session), which dockerd's /grpc also serves."""
    ctx = make_context(tmp_path)
    with open_builder(f"docker://{docker_host}", session_transport="control") as b:
        b.solve_dockerfile(context=ctx, dockerfile=dockerfile(tmp_path, "FROM scratch\nCOPY . /\n"),
                           platform="linux/amd64", export=LocalExport(tmp_path / "out"))
    assert tree(tmp_path / "out") == tree(ctx)


def test_cancel_stops_a_running_build(builder: Builder, busybox_base: str, tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    df = dockerfile(tmp_path, f"FROM {busybox_base}\nRUN sleep 60\n")
    cancel = threading.Event()

    def on_status(event: StatusEvent) -> None:
        if isinstance(event, VertexEvent) and "RUN sleep 60" in event.name and event.state == "started":
            cancel.set()

    start = time.monotonic()
    with pytest.raises(BuildCancelled, match="linux/amd64 cancelled"):
        builder.solve_dockerfile(context=tmp_path / "ctx", dockerfile=df, platform="linux/amd64",
                                 export=TarExport(tmp_path / "o.tar"), no_cache=True,
                                 on_status=on_status, cancel=cancel)
    assert cancel.is_set()
    assert time.monotonic() - start < 30
    # The builder stays usable after a cancelled solve.
    assert "linux/amd64" in builder.platforms()


def test_unreachable_builders(tmp_path: Path) -> None:
    with pytest.raises(PkgtoolError, match=r"cannot reach BuildKit at unix://.*nope\.sock"):
        open_builder(f"unix://{tmp_path}/nope.sock")
    with pytest.raises(PkgtoolError, match=r"cannot reach BuildKit at unix://.*nope\.sock"):
        open_builder(f"docker://unix://{tmp_path}/nope.sock")


def test_a_failing_status_callback_stops_the_build(builder: Builder, tmp_path: Path) -> None:
    ctx = make_context(tmp_path)

    def broken(event: StatusEvent) -> None:
        raise RuntimeError("display bug")

    with pytest.raises(RuntimeError, match="display bug"):
        builder.solve_dockerfile(context=ctx, dockerfile=dockerfile(tmp_path, "FROM scratch\nCOPY . /\n"),
                                 platform="linux/amd64", export=TarExport(tmp_path / "o.tar"), on_status=broken)
