"""The registry client and transfer against the stack's real Distribution 2.8 registry.

Images are made here from random bytes, pushed with pkgtool, read back with pkgtool and
(independently) with skopeo.  Fault tests use a closed port and a tiny HTML server.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from pkgtool.errors import DigestMismatchError, PkgtoolError, RegistryError
from pkgtool.jsonio import hashed_json
from pkgtool.oci import layout_gc
from pkgtool.oci import mediatypes as mt
from pkgtool.oci.descriptor import Descriptor, Platform, sha256_digest
from pkgtool.oci.layout import Layout
from pkgtool.oci.manifest import build_index, build_manifest
from pkgtool.oci.reference import parse_reference
from pkgtool.oci.referrers import fallback_tag
from pkgtool.oci.registry import RegistryClient
from pkgtool.oci.transfer import pull, push

pytestmark = pytest.mark.integration


@pytest.fixture
def client(registry: str) -> Iterator[RegistryClient]:
    with RegistryClient(registry, retries=1, backoff=0.05) as c:
        yield c


def make_image(layout: Layout, arch: str, *, layers: int = 2, size: int = 64 * 1024) -> Descriptor:
    """A random-content image for ``linux/arch`` stored in ``layout`` (untagged)."""
    layer_descs = []
    for _ in range(layers):
        data = os.urandom(size)
        layout.write_blob(data)
        layer_descs.append(Descriptor.for_bytes(mt.OCI_LAYER, data))
    config = hashed_json({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [d.digest for d in layer_descs]},
    })
    layout.write_blob(config)
    manifest = build_manifest(Descriptor.for_bytes(mt.OCI_CONFIG, config), layer_descs)
    layout.write_blob(manifest)
    return Descriptor.for_bytes(mt.OCI_MANIFEST, manifest, platform=Platform("linux", arch))


def make_index(layout: Layout, arches: list[str]) -> tuple[Descriptor, list[Descriptor]]:
    children = [make_image(layout, arch) for arch in arches]
    index = build_index(children)
    layout.write_blob(index)
    return Descriptor.for_bytes(mt.OCI_INDEX, index), children


def new_layout(path: Path) -> Layout:
    layout = Layout(path)
    layout.ensure()
    return layout


def blob_set(layout: Layout) -> set[str]:
    return {digest for digest, _size in layout.iter_blobs()}


def skopeo_raw(registry: str, repo: str, tag: str) -> bytes:
    return subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry}/{repo}:{tag}"],
        check=True, capture_output=True, timeout=60,
    ).stdout


def test_push_and_pull_single_image(client: RegistryClient, registry: str, unique_repo: str, tmp_path: Path) -> None:
    src = new_layout(tmp_path / "src")
    image = make_image(src, "amd64")
    ref = f"{registry}/{unique_repo}:v1"
    assert push(client, src, image, ref) == image.digest
    # What skopeo reads is byte for byte what we pushed.
    assert sha256_digest(skopeo_raw(registry, unique_repo, "v1")) == image.digest
    assert client.head_manifest(unique_repo, "v1").digest == image.digest

    dst = new_layout(tmp_path / "dst")
    pulled = pull(client, ref, dst)
    assert (pulled.digest, pulled.media_type, pulled.size) == (image.digest, image.media_type, image.size)
    assert dst.resolve(ref) == pulled
    assert blob_set(dst) == blob_set(src)
    assert layout_gc.verify(dst) == []
    # A second pull is served from the cache for blobs and still re-verifies the manifest.
    assert pull(client, parse_reference(ref).with_digest(image.digest), dst).digest == image.digest


def test_push_and_pull_multi_arch_index(client: RegistryClient, registry: str, unique_repo: str, tmp_path: Path) -> None:
    src = new_layout(tmp_path / "src")
    index, (amd, arm) = make_index(src, ["amd64", "arm64"])
    ref = f"{registry}/{unique_repo}:multi"
    push(client, src, index, ref)
    raw = json.loads(skopeo_raw(registry, unique_repo, "multi"))
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]

    full = new_layout(tmp_path / "full")
    assert pull(client, ref, full).digest == index.digest
    assert blob_set(full) == blob_set(src)
    assert layout_gc.verify(full) == []

    only_arm = new_layout(tmp_path / "arm")
    got = pull(client, ref, only_arm, platforms=[Platform("linux", "arm64")])
    assert got.digest == index.digest
    assert only_arm.has_blob(arm.digest) and not only_arm.has_blob(amd.digest)
    arm_blobs = {c.digest for c in layout_gc.children(src, arm)} | {arm.digest, index.digest}
    assert blob_set(only_arm) == arm_blobs

    with pytest.raises(PkgtoolError, match=r"no image for linux/s390x \(available: linux/amd64, linux/arm64\)"):
        pull(client, ref, new_layout(tmp_path / "none"), platforms=[Platform("linux", "s390x")])


def test_chunked_upload_and_tag_pagination(client: RegistryClient, unique_repo: str) -> None:
    data = os.urandom(300_000)
    digest = sha256_digest(data)
    assert client.push_blob(unique_repo, data, digest=digest, size=len(data), chunk_size=128 * 1024) == digest
    assert client.get_blob_bytes(unique_repo, digest, max_size=len(data)) == data
    with pytest.raises(RegistryError, match="over the 1000-byte limit"):
        client.get_blob_bytes(unique_repo, digest, max_size=1000)

    config = hashed_json({"architecture": "amd64", "os": "linux"})
    client.push_blob_bytes(unique_repo, config)
    manifest = build_manifest(Descriptor.for_bytes(mt.OCI_CONFIG, config), [Descriptor.for_bytes(mt.OCI_LAYER, data)])
    tags = [f"t{i}" for i in range(5)]
    for tag in tags:
        client.put_manifest(unique_repo, tag, manifest, mt.OCI_MANIFEST)
    # Distribution 2.8 ignores ``n`` on tag lists (paging is tested below with a fake).
    assert sorted(client.list_tags(unique_repo, page_size=2)) == tags
    assert client.list_tags("pkgtool-test/never-pushed-anything") == []


def test_push_blob_from_file_monolithic_and_chunked(client: RegistryClient, unique_repo: str, tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(200_000))
    digest = sha256_digest(path.read_bytes())
    with open(path, "rb") as f:
        client.push_blob(unique_repo, f, digest=digest, size=200_000, chunk_size=70_000)
    assert client.blob_exists(unique_repo, digest)
    other = f"{unique_repo}-mono"
    with open(path, "rb") as f:
        client.push_blob(other, f, digest=digest, size=200_000)
    assert client.get_blob_bytes(other, digest, max_size=200_000) == path.read_bytes()


def test_cross_repository_mount(client: RegistryClient, unique_repo: str) -> None:
    data = os.urandom(50_000)
    digest = client.push_blob_bytes(unique_repo, data)
    target = f"{unique_repo}-mounted"
    assert not client.blob_exists(target, digest)
    assert client.mount_blob(target, digest, from_repository=unique_repo) is True
    assert client.blob_exists(target, digest)

    # The registry declines a mount of something the source lacks (202): push_blob then
    # uploads through the session the mount request opened.
    fresh = os.urandom(10_000)
    fresh_digest = sha256_digest(fresh)
    third = f"{unique_repo}-third"
    assert client.mount_blob(third, fresh_digest, from_repository=unique_repo) is False
    client.push_blob(third, fresh, digest=fresh_digest, size=len(fresh), mount_from=unique_repo)
    assert client.get_blob_bytes(third, fresh_digest, max_size=len(fresh)) == fresh


def test_referrers_fallback_round_trip(client: RegistryClient, unique_repo: str, tmp_path: Path) -> None:
    src = new_layout(tmp_path / "src")
    subject = make_image(src, "amd64")
    push(client, src, subject, f"{client.registry}/{unique_repo}:v1")
    assert client.list_referrers(unique_repo, subject.digest) == []

    empty = b"{}"
    client.push_blob_bytes(unique_repo, empty)
    referrers = []
    for kind in ("application/vnd.example.sbom", "application/vnd.example.sig"):
        payload = os.urandom(100)
        client.push_blob_bytes(unique_repo, payload)
        manifest = build_manifest(
            Descriptor.for_bytes(mt.OCI_EMPTY, empty), [Descriptor.for_bytes("application/octet-stream", payload)],
            subject=subject, artifact_type=kind, annotations={"org.example.kind": kind},
        )
        pushed = client.put_manifest(unique_repo, sha256_digest(manifest), manifest, mt.OCI_MANIFEST)
        assert pushed.artifact_type == kind
        described = Descriptor(pushed.media_type, pushed.digest, pushed.size,
                               annotations={"org.example.kind": kind}, artifact_type=kind)
        client.add_referrer(unique_repo, subject, described)
        client.add_referrer(unique_repo, subject.digest, described)  # again: no duplicate
        referrers.append(described)

    found = client.list_referrers(unique_repo, subject.digest)
    assert [d.digest for d in found] == [d.digest for d in referrers]
    assert found[0].annotations == {"org.example.kind": "application/vnd.example.sbom"}
    sigs = client.list_referrers(unique_repo, subject.digest, artifact_type="application/vnd.example.sig")
    assert [d.digest for d in sigs] == [referrers[1].digest]
    assert fallback_tag(subject.digest) in client.list_tags(unique_repo)


def test_tampered_blob_is_a_digest_mismatch_and_nothing_is_kept(
    client: RegistryClient, registry: str, unique_repo: str, registry_storage: Path, tmp_path: Path
) -> None:
    src = new_layout(tmp_path / "src")
    image = make_image(src, "amd64", layers=1)
    push(client, src, image, f"{registry}/{unique_repo}:v1")
    layer = layout_gc.children(src, image)[1]
    hexdigest = layer.digest.removeprefix("sha256:")
    stored = registry_storage / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"
    original = stored.read_bytes()
    try:
        # Same size, one flipped byte: only hashing can notice.
        stored.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
        dst = new_layout(tmp_path / "dst")
        with pytest.raises(DigestMismatchError, match=f"blob {layer.digest}.*hashes to"):
            pull(client, f"{registry}/{unique_repo}:v1", dst)
        assert not dst.has_blob(layer.digest)
        assert dst.list_refs() == []
        assert not any(p.name.startswith(".pkgtool-tmp") for p in dst.blobs_dir.iterdir())
    finally:
        stored.write_bytes(original)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_registry_fails_fast_with_one_clear_line(tmp_path: Path) -> None:
    port = _free_port()
    client = RegistryClient(f"127.0.0.1:{port}", retries=2, backoff=0.05)
    started = time.monotonic()
    with pytest.raises(RegistryError) as caught:
        client.get_manifest("x/y", "tag")
    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        f"registry 127.0.0.1:{port}: GET manifest x/y:tag: cannot connect: connection refused "
        "(gave up after 3 attempts)"
    )

    layout = new_layout(tmp_path / "cache")
    with pytest.raises(RegistryError, match="cannot connect"):
        pull(client, f"127.0.0.1:{port}/x/y:tag", layout)
    assert layout.list_refs() == [] and blob_set(layout) == set()


class _HtmlHandler(http.server.BaseHTTPRequestHandler):
    page = b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def html_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_html_answering_server_is_a_clear_error_and_nothing_is_cached(html_server: str, tmp_path: Path) -> None:
    client = RegistryClient(html_server, retries=0)
    with pytest.raises(RegistryError, match=r"GET manifest a/b:latest: got an HTML page, not a manifest"):
        client.get_manifest("a/b", "latest")
    layout = new_layout(tmp_path / "cache")
    with pytest.raises(RegistryError, match="HTML"):
        pull(client, f"{html_server}/a/b:latest", layout)
    assert layout.list_refs() == [] and blob_set(layout) == set()
    # A digest-pinned read gets the same clear message, not a confusing digest mismatch.
    with pytest.raises(RegistryError, match="HTML"):
        client.get_manifest("a/b", "sha256:" + "a" * 64)


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
    """Answers from a per-server script: path -> list of (status, headers, body), popped
    in order (the last one repeats)."""

    script: ClassVar[dict[str, list[tuple[int, dict[str, str], bytes]]]] = {}
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        answers = self.script.get(self.path) or [(404, {}, b"")]
        status, headers, body = answers.pop(0) if len(answers) > 1 else answers[0]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[type[_ScriptedHandler], str]]:
    handler = type("Handler", (_ScriptedHandler,), {"script": {}, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield handler, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_tag_pagination_follows_link_headers(scripted: tuple[type[_ScriptedHandler], str]) -> None:
    handler, addr = scripted
    page = lambda tags: json.dumps({"name": "a/b", "tags": tags}).encode()  # noqa: E731
    handler.script.update({
        "/v2/a/b/tags/list?n=2": [(200, {"Link": '</v2/a/b/tags/list?last=t1&n=2>; rel="next"'}, page(["t0", "t1"]))],
        "/v2/a/b/tags/list?last=t1&n=2": [(200, {"Link": '<http://' + addr + '/v2/a/b/tags/list?last=t3&n=2>; rel="next"'}, page(["t2", "t3"]))],
        "/v2/a/b/tags/list?last=t3&n=2": [(200, {}, page(["t4"]))],
    })
    assert RegistryClient(addr, retries=0).list_tags("a/b", page_size=2) == ["t0", "t1", "t2", "t3", "t4"]


def test_retries_honour_retry_after_then_give_up_clearly(scripted: tuple[type[_ScriptedHandler], str]) -> None:
    handler, addr = scripted
    ok = json.dumps({"name": "a/b", "tags": ["v1"]}).encode()
    handler.script["/v2/a/b/tags/list"] = [(503, {"Retry-After": "1"}, b""), (429, {}, b""), (200, {}, ok)]
    client = RegistryClient(addr, retries=3, backoff=0.01, max_backoff=0.2)
    started = time.monotonic()
    assert client.list_tags("a/b") == ["v1"]
    # Retry-After asked for 1 s; the cap (0.2 s) wins, so a hostile server cannot stall us.
    assert time.monotonic() - started < 1.0
    assert handler.seen.count("/v2/a/b/tags/list") == 3

    handler.script["/v2/c/d/tags/list"] = [(500, {}, b"boom")]
    with pytest.raises(RegistryError) as caught:
        RegistryClient(addr, retries=2, backoff=0.01).list_tags("c/d")
    assert str(caught.value) == (
        f"registry {addr}: GET tags c/d: HTTP 500 Internal Server Error (gave up after 3 attempts)"
    )
    assert handler.seen.count("/v2/c/d/tags/list") == 3


def test_hostile_manifest_answers(scripted: tuple[type[_ScriptedHandler], str], tmp_path: Path) -> None:
    handler, addr = scripted
    handler.script["/v2/a/b/manifests/big"] = [
        (200, {"Content-Type": mt.OCI_MANIFEST, "Content-Length": str(mt.MAX_MANIFEST_BYTES + 1)}, b"")
    ]
    handler.script["/v2/a/b/manifests/weird"] = [(200, {"Content-Type": "application/vnd.example+json"}, b'{"schemaVersion": 2, "mediaType": "application/vnd.example+json"}')]
    index = build_index([])
    handler.script["/v2/a/b/manifests/lying"] = [(200, {"Content-Type": mt.OCI_INDEX, "Docker-Content-Digest": "sha256:" + "0" * 64}, index)]
    handler.script["/v2/a/b/manifests/err"] = [(404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}')]
    client = RegistryClient(addr, retries=0)
    with pytest.raises(RegistryError, match="over the 4194304-byte limit"):
        client.get_manifest("a/b", "big")
    with pytest.raises(PkgtoolError, match=r"unsupported manifest media type 'application/vnd\.example\+json'"):
        client.get_manifest("a/b", "weird")
    with pytest.raises(DigestMismatchError, match="hashes to"):
        client.get_manifest("a/b", "lying")
    layout = new_layout(tmp_path / "cache")
    for tag in ("big", "weird", "lying"):
        with pytest.raises(PkgtoolError):
            pull(client, f"{addr}/a/b:{tag}", layout)
    assert layout.list_refs() == [] and blob_set(layout) == set()
    assert client.get_manifest_or_none("a/b", "err") is None
