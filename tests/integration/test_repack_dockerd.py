"""Re-packing images that the real dockerd built and saved: two builds, one digest."""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pkgtool.oci import layout_gc, mediatypes
from pkgtool.oci.descriptor import Platform
from pkgtool.oci.layout import Layout
from pkgtool.oci.repack import repack_archive

pytestmark = pytest.mark.integration

EPOCH = 1_700_000_000
DOCKERFILE = b"""FROM scratch
COPY hello /hello
COPY tree/ /opt/tree/
LABEL org.example.kind=test
ENV GREETING=hi
WORKDIR /opt
ENTRYPOINT ["/hello"]
"""


def _context(*, mtime: float) -> io.BytesIO:
    """A build context whose file times are ``mtime``: only timestamps differ per build."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes | None = None, *, mode: int = 0o644, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode, info.uname = mtime, mode, f"user{int(mtime) % 97}"
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        add("Dockerfile", DOCKERFILE)
        add("hello", b"#!/bin/true\n", mode=0o755)
        add("tree", None, mode=0o755)
        add("tree/a", b"a")
        add("tree/a-b", b"a-b")
        add("tree/a.d", None, mode=0o755)
        add("tree/a.d/x", b"x")
        add("tree/with space ü", b"odd name")
        add("tree/link", link="a")
    buf.seek(0)
    return buf


@pytest.fixture
def docker_client(docker_host: str) -> Iterator[Any]:
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=120)
    yield client
    client.close()


def _build(client: Any, tag: str, *, mtime: float) -> Any:
    image, _logs = client.images.build(fileobj=_context(mtime=mtime), custom_context=True, tag=tag,
                                       rm=True, nocache=True)
    return image


def test_two_builds_at_different_times_repack_to_the_same_digest(
        docker_client: Any, tmp_path: Path) -> None:
    repo = f"pkgtool-test/repack-{secrets.token_hex(4)}"
    layout = Layout(tmp_path / "cache")
    tags = [f"{repo}:one", f"{repo}:two"]
    labels = {"org.opencontainers.image.source": "https://example.org/pkg",
              "org.mobyproject.config": json.dumps({"capabilities": ["CAP_NET_ADMIN"]})}
    try:
        first = _build(docker_client, tags[0], mtime=time.time() - 3600)
        time.sleep(1.1)  # a different second for every daemon-side timestamp
        second = _build(docker_client, tags[1], mtime=time.time())
        # The daemon's own images differ (created times, container ids, file mtimes) ...
        assert first.id != second.id
        assert first.attrs["RootFS"]["Layers"] != second.attrs["RootFS"]["Layers"]

        results = [
            repack_archive(image.save(named=True), layout, source_date_epoch=EPOCH, labels=labels,
                           image=tag, tag=tag)
            for image, tag in ((first, tags[0]), (second, tags[1]))
        ]
    finally:
        for tag in tags:
            # Best effort: a failed build leaves nothing to remove.
            with contextlib.suppress(Exception):
                docker_client.images.remove(tag, force=True, noprune=False)

    # ... the re-packed ones do not.
    assert results[0].manifest == results[1].manifest
    assert results[0].manifest.platform == Platform("linux", docker_client.version()["Arch"])
    assert layout_gc.verify(layout) == []

    inspect = subprocess.run(["skopeo", "inspect", f"oci:{layout.root}:{tags[0]}"],
                             capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(inspect.stdout)
    assert info["Digest"] == results[0].manifest.digest
    assert info["Created"] == "2023-11-14T22:13:20Z"
    assert info["Labels"]["org.opencontainers.image.source"] == "https://example.org/pkg"
    assert info["Labels"]["org.example.kind"] == "test"
    assert "GREETING=hi" in info["Env"]
    assert len(info["Layers"]) == 2

    config = json.loads(layout.read_blob(results[0].config_digest))
    assert config["config"]["Entrypoint"] == ["/hello"] and config["config"]["WorkingDir"] == "/opt"
    assert "container_config" not in config and "docker_version" not in config
    assert {h["created"] for h in config["history"]} == {"2023-11-14T22:13:20Z"}

    # The tree layer, as stored: sorted, clamped, nameless owners, symlink kept.
    manifest = json.loads(layout.read_blob(results[0].manifest.digest))
    assert manifest["mediaType"] == mediatypes.OCI_MANIFEST
    with layout.open_blob(manifest["layers"][1]["digest"]) as blob, \
            tarfile.open(fileobj=blob, mode="r|gz") as tar:
        members = [(m.name, m.mtime, m.uname) for m in tar]
    names = [name for name, _, _ in members]
    assert names == ["opt", "opt/tree", "opt/tree/a", "opt/tree/a-b", "opt/tree/a.d",
                     "opt/tree/a.d/x", "opt/tree/link", "opt/tree/with space ü"]
    assert all(mtime <= EPOCH and uname == "" for _, mtime, uname in members)

    # Re-packing our own output (as an OCI archive and as a docker archive, written by
    # skopeo) is a fixed point: same digest again.
    for transport, name in (("oci-archive", "again.oci.tar"), ("docker-archive", "again.docker.tar")):
        target = tmp_path / name
        subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout.root}:{tags[0]}",
                        f"{transport}:{target}"], check=True, timeout=120, capture_output=True)
        again = repack_archive(target, layout, source_date_epoch=EPOCH, labels=labels)
        assert again.manifest.digest == results[0].manifest.digest, transport
