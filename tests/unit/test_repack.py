"""Re-packing docker-archive and OCI-layout tars into reproducible images (pkgtool.oci.repack)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pkgtool.errors import PkgtoolError
from pkgtool.oci import layout_gc, mediatypes
from pkgtool.oci.descriptor import Platform
from pkgtool.oci.layout import Layout
from pkgtool.oci.repack import RepackedImage, normalize_config, repack_archive

EPOCH = 1_700_000_000


def _tar(entries: list[tuple[str, bytes | None]], *, mtime: float, uname: str = "root",
         symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uname = mtime, uname
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layers_v1(mtime: float, uname: str = "root") -> list[bytes]:
    return [
        _tar([("a", b"hello")], mtime=mtime, uname=uname),
        _tar([("d/", None), ("d/b", b"world"), ("d/c", b"!")], mtime=mtime, uname=uname),
        b"\0" * 1024,  # what the legacy builder stores for a RUN that changed nothing
    ]


def layers_v2(mtime: float) -> list[bytes]:
    # The same file systems, entries in another order, different owner names.
    return [
        _tar([("./a", b"hello")], mtime=mtime, uname="daemon"),
        _tar([("d/c", b"!"), ("d/b", b"world"), ("d/", None)], mtime=mtime, uname="nobody"),
        b"\0" * 1024,
    ]


def docker_config(diff_ids: list[str], *, created: str, noise: str) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "container": noise,
        "docker_version": "20.10.24",
        "container_config": {"Hostname": noise[:12], "Cmd": ["/bin/sh", "-c", "#(nop)"]},
        "config": {
            "Hostname": noise[:12], "Env": ["PATH=/usr/bin:/bin", "A=1"], "Cmd": None,
            "Entrypoint": ["/a"], "Volumes": None, "WorkingDir": "", "OnBuild": None,
            "Image": "sha256:" + hashlib.sha256(noise.encode()).hexdigest(),
            "Labels": {"x": "y"}, "ExposedPorts": {"22/tcp": {}},
        },
        "history": [
            {"created": created, "created_by": "COPY a /a"},
            {"created": created, "created_by": "COPY b /d/"},
            {"created": created, "created_by": "LABEL x=y", "empty_layer": True},
            {"created": created, "created_by": "RUN true"},
        ],
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }


def docker_archive(layers: list[bytes], *, created: str = "2024-05-01T10:00:00.123Z",
                   noise: str = "c0ffee" * 10, repo_tags: list[str] | None = None,
                   config: dict[str, Any] | None = None, symlink_dupes: bool = False) -> bytes:
    diff_ids = [_sha(layer) for layer in layers]
    config_bytes = json.dumps(config or docker_config(diff_ids, created=created, noise=noise)).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    buf = io.BytesIO()
    names: list[str] = []
    with tarfile.open(fileobj=buf, mode="w") as tar:
        first_of: dict[str, str] = {}
        for i, layer in enumerate(layers):
            layer_dir = hashlib.sha256(f"{noise}{i}".encode()).hexdigest()
            name = f"{layer_dir}/layer.tar"
            names.append(name)
            if symlink_dupes and _sha(layer) in first_of:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, f"../{first_of[_sha(layer)]}"
                tar.addfile(info)
                continue
            first_of.setdefault(_sha(layer), name)
            _add(tar, name, layer)
        _add(tar, config_name, config_bytes)
        manifest = [{"Config": config_name, "RepoTags": repo_tags, "Layers": names}]
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def oci_archive(layers: list[bytes], *, platforms: tuple[str, ...] = ("amd64",),
                created: str = "2030-01-01T00:00:00Z", attestation: bool = False) -> bytes:
    """An OCI layout tar (as buildkitd's oci exporter writes), gzip layers, maybe multi-arch."""
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        digest = _sha(data)
        blobs[digest] = data
        return digest

    entries = []
    for arch in platforms:
        gz = [gzip.compress(layer, mtime=123) for layer in layers]
        config = docker_config([_sha(layer) for layer in layers], created=created, noise="beef" * 16)
        config["architecture"] = arch
        config_bytes = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": put(config_bytes), "size": len(config_bytes)},
            "layers": [{"mediaType": mediatypes.OCI_LAYER_GZIP, "digest": put(g), "size": len(g)} for g in gz],
        }
        manifest_bytes = json.dumps(manifest).encode()
        entries.append({"mediaType": mediatypes.OCI_MANIFEST, "digest": put(manifest_bytes),
                        "size": len(manifest_bytes), "platform": {"os": "linux", "architecture": arch}})
    if attestation:  # BuildKit's provenance manifest, listed next to the image
        statement = put(b'{"predicateType":"https://slsa.dev/provenance/v0.2"}')
        entries.append({"mediaType": mediatypes.OCI_MANIFEST, "digest": statement, "size": 52,
                        "platform": {"os": "unknown", "architecture": "unknown"},
                        "annotations": {"vnd.docker.reference.type": "attestation-manifest"}})
    index = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": entries}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            _add(tar, "blobs/sha256/" + digest.removeprefix("sha256:"), data)
    return buf.getvalue()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "cache")


def repack(data: bytes, layout: Layout, **kwargs: Any) -> RepackedImage:
    kwargs.setdefault("source_date_epoch", EPOCH)
    return repack_archive(io.BytesIO(data), layout, **kwargs)


def test_two_builds_of_the_same_image_repack_to_one_digest(layout: Layout) -> None:
    first = repack(docker_archive(layers_v1(EPOCH + 500)), layout)
    second = repack(docker_archive(layers_v2(EPOCH + 86400), created="2025-01-01T00:00:00Z",
                                   noise="deadbeef" * 8), layout)
    assert first.manifest == second.manifest
    assert first.manifest_bytes == second.manifest_bytes
    assert first.manifest.platform == Platform("linux", "amd64")
    assert layout_gc.verify(layout) == []


def test_output_is_an_oci_image_with_a_clean_config(layout: Layout) -> None:
    labels = {"org.opencontainers.image.source": "https://example.org/repo",
              "org.opencontainers.image.revision": "abc123", "x": "overridden"}
    image = repack(docker_archive(layers_v1(EPOCH + 500)), layout, labels=labels)
    manifest = json.loads(layout.read_blob(image.manifest.digest))
    assert manifest["mediaType"] == mediatypes.OCI_MANIFEST
    assert manifest["config"]["mediaType"] == mediatypes.OCI_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [mediatypes.OCI_LAYER_GZIP] * 2
    assert image.manifest.size == len(image.manifest_bytes)

    config = json.loads(layout.read_blob(image.config_digest))
    assert set(config) == {"architecture", "os", "config", "created", "history", "rootfs"}
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert config["config"] == {
        "Env": ["PATH=/usr/bin:/bin", "A=1"], "Entrypoint": ["/a"], "ExposedPorts": {"22/tcp": {}},
        "Labels": {"x": "overridden", "org.opencontainers.image.source": "https://example.org/repo",
                   "org.opencontainers.image.revision": "abc123"},
    }
    # The empty RUN layer is dropped and its history entry says so.
    assert config["history"] == [
        {"created": "2023-11-14T22:13:20Z", "created_by": "COPY a /a"},
        {"created": "2023-11-14T22:13:20Z", "created_by": "COPY b /d/"},
        {"created": "2023-11-14T22:13:20Z", "created_by": "LABEL x=y", "empty_layer": True},
        {"created": "2023-11-14T22:13:20Z", "created_by": "RUN true", "empty_layer": True},
    ]
    # diff_ids are those of the stored layers, decompressed.
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        plain = gzip.decompress(layout.read_blob(layer["digest"]))
        assert _sha(plain) == diff_id
        with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
            assert all(m.mtime <= EPOCH and m.uname == "" for m in tar)
    assert list(image.diff_ids) == config["rootfs"]["diff_ids"]


def test_epoch_and_labels_change_the_digest(layout: Layout) -> None:
    archive = docker_archive(layers_v1(EPOCH + 500))
    base = repack(archive, layout).manifest.digest
    assert repack(archive, layout, source_date_epoch=EPOCH + 1).manifest.digest != base
    assert repack(archive, layout, labels={"org.opencontainers.image.version": "1"}).manifest.digest != base
    assert repack(archive, layout).manifest.digest == base


def test_oci_layout_input_matches_docker_archive_input(layout: Layout) -> None:
    from_docker = repack(docker_archive(layers_v1(EPOCH + 500)), layout)
    from_oci = repack(oci_archive(layers_v2(EPOCH + 7), attestation=True), layout)
    assert from_oci.manifest.digest == from_docker.manifest.digest


def test_multi_arch_oci_layout_needs_a_platform(layout: Layout) -> None:
    archive = oci_archive(layers_v1(EPOCH), platforms=("amd64", "arm64"))
    with pytest.raises(PkgtoolError, match="2 manifests match"):
        repack(archive, layout)
    arm = repack(archive, layout, platform=Platform("linux", "arm64"))
    assert arm.manifest.platform == Platform("linux", "arm64")
    assert json.loads(layout.read_blob(arm.config_digest))["architecture"] == "arm64"


def test_platform_must_agree_with_the_config(layout: Layout) -> None:
    with pytest.raises(PkgtoolError, match="not the requested linux/s390x"):
        repack(docker_archive(layers_v1(EPOCH)), layout, platform=Platform("linux", "s390x"))


def test_zstd_layers(layout: Layout) -> None:
    import zstandard

    image = repack(docker_archive(layers_v1(EPOCH)), layout, compression="zstd")
    assert {layer.media_type for layer in image.layers} == {mediatypes.OCI_LAYER_ZSTD}
    blob = layout.read_blob(image.layers[0].digest)
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    assert _sha(plain) == image.diff_ids[0]
    again = repack(docker_archive(layers_v2(EPOCH + 9)), layout, compression="zstd")
    assert again.manifest.digest == image.manifest.digest


def test_tagging_and_chunked_input(layout: Layout) -> None:
    data = docker_archive(layers_v1(EPOCH))
    chunks = (data[i:i + 1000] for i in range(0, len(data), 1000))
    image = repack_archive(chunks, layout, source_date_epoch=EPOCH, tag="example.org/pkg:1")
    assert layout.resolve("example.org/pkg:1") == image.manifest
    path = layout.root.parent / "archive.tar"
    path.write_bytes(data)
    assert repack_archive(path, layout, source_date_epoch=EPOCH).manifest.digest == image.manifest.digest
    leftovers = [p.name for p in layout.root.iterdir() if p.name.startswith(".pkgtool-tmp")]
    assert leftovers == []


def test_symlinked_duplicate_layers_as_docker_save_writes_them(layout: Layout) -> None:
    layer = _tar([("f", b"same")], mtime=EPOCH)
    config = docker_config([_sha(layer)] * 2, created="x", noise="n" * 12)
    config["history"] = [{"created_by": "COPY f /"}, {"created_by": "COPY f /"}]
    image = repack(docker_archive([layer, layer], config=config, symlink_dupes=True), layout)
    assert len(image.layers) == 2 and image.layers[0] == image.layers[1]


def test_choosing_among_several_images(layout: Layout) -> None:
    data = docker_archive(layers_v1(EPOCH), repo_tags=["pkg:1"])
    assert repack(data, layout, image="pkg:1").manifest.platform is not None
    with pytest.raises(PkgtoolError, match="no image 'pkg:2'"):
        repack(data, layout, image="pkg:2")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda a: a.replace(b'"Layers"', b'"Layerz"'), "lacks Config or Layers"),
    (lambda a: b"not a tar" * 200, "not a"),
    (lambda a: _without(a, "manifest.json"), "neither manifest.json"),
])
def test_malformed_archives(layout: Layout, mutate: Any, message: str) -> None:
    with pytest.raises(PkgtoolError, match=message):
        repack(mutate(docker_archive(layers_v1(EPOCH))), layout)


def _without(archive: bytes, drop: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for info in src:
            if info.name != drop:
                dst.addfile(info, src.extractfile(info) if info.isreg() else None)
    return out.getvalue()


def test_layer_not_matching_its_diff_id_is_refused(layout: Layout) -> None:
    layers = layers_v1(EPOCH)
    config = docker_config([_sha(layer) for layer in layers], created="x", noise="n" * 12)
    config["rootfs"]["diff_ids"][1] = "sha256:" + "1" * 64
    with pytest.raises(PkgtoolError, match="diff_id"):
        repack(docker_archive(layers, config=config), layout)


def test_tampered_config_is_refused(layout: Layout) -> None:
    data = docker_archive(layers_v1(EPOCH))
    tampered = data.replace(b'"A=1"', b'"A=2"')
    with pytest.raises(PkgtoolError, match="hashes to"):
        repack(tampered, layout)


def test_hostile_layer_entries_are_refused(layout: Layout) -> None:
    evil = _tar([("../../etc/cron.d/x", b"boom")], mtime=EPOCH)
    config = docker_config([_sha(evil)], created="x", noise="n" * 12)
    config["history"] = [{"created_by": "COPY"}]
    with pytest.raises(PkgtoolError, match=r"'\.\.' component"):
        repack(docker_archive([evil], config=config), layout)


def test_member_links_cannot_escape_the_archive(layout: Layout) -> None:
    layer = _tar([("f", b"x")], mtime=EPOCH)
    config = docker_config([_sha(layer)], created="x", noise="n" * 12)
    config["history"] = [{"created_by": "COPY"}]
    data = docker_archive([layer], config=config)
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for info in src:
            if info.name.endswith("layer.tar"):
                info.type, info.linkname, info.size = tarfile.SYMTYPE, "../../../etc/passwd", 0
                dst.addfile(info)
            else:
                dst.addfile(info, src.extractfile(info))
    with pytest.raises(PkgtoolError, match="outside the archive"):
        repack(out.getvalue(), layout)


def test_history_is_rebuilt_when_inconsistent() -> None:
    config = {"architecture": "arm64", "os": "linux", "history": [{"created_by": "import"}] * 3,
              "config": {"Cmd": [], "Env": None}}
    out = normalize_config(config, diff_ids=["sha256:" + "a" * 64], kept=[True, False],
                           source_date_epoch=0, labels={}, platform=None)
    assert out["history"] == [{"created": "1970-01-01T00:00:00Z", "created_by": "pkgtool: re-packed layer"}]
    assert "config" not in out  # empty values are omitted
    assert out["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]}


def test_config_without_architecture_takes_the_platform() -> None:
    out = normalize_config({"os": "linux"}, diff_ids=[], kept=[], source_date_epoch=0, labels={},
                           platform=Platform("linux", "arm", "v7"))
    assert (out["architecture"], out["variant"]) == ("arm", "v7")
    with pytest.raises(PkgtoolError, match="no architecture"):
        normalize_config({"os": "linux"}, diff_ids=[], kept=[], source_date_epoch=0, labels={}, platform=None)
