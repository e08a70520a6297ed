"""Re-pack a builder's image export into a reproducible OCI image in the layout cache.

Input is what a builder hands us:

* a **docker-archive** tar (``docker save`` / the SDK's ``Image.save()`` after BuildKit's
  ``moby`` exporter): ``manifest.json`` naming a config file and ``<id>/layer.tar`` files
  (newer daemons point into ``blobs/sha256/`` instead; both work), or
* an **OCI image layout** tar (buildkitd's ``oci`` exporter): ``index.json`` and blobs.

Output is an OCI image whose digest depends only on the file systems and the settings
that matter:

* every layer normalized (:func:`pkgtool.oci.normalize.normalize_layer`) and compressed with
  fixed parameters; a layer that is empty after normalization (no entries, or only the
  root directory) is **dropped** and its history entry marked ``empty_layer``, so builders
  that do or do not emit empty layers (the legacy builder does for a no-op ``RUN``,
  BuildKit does not) give the same image;
* a config that keeps what a runtime uses (``architecture``, ``os``, ``variant``,
  ``os.version``, ``os.features``, ``author`` and the ``config`` fields Env, Entrypoint,
  Cmd, WorkingDir, User, Labels, ExposedPorts, Volumes, StopSignal, Healthcheck, Shell,
  OnBuild, ArgsEscaped), with ``created`` and every history ``created`` set to the
  SOURCE_DATE_EPOCH (kept rather than omitted because several tools show or sort by it),
  ``rootfs.diff_ids`` recomputed and every builder-host field (container,
  container_config, docker_version, hostname, parent image id, BuildKit build info)
  dropped.  Empty values (``"Cmd": null``, ``"Volumes": {}``) are omitted, so the
  legacy builder and BuildKit spell "unset" the same way;
* labels passed in (``org.opencontainers.image.source`` …, ``org.mobyproject.config``)
  set on top of the image's own;
* OCI media types throughout, canonical JSON (sorted keys, compact) for config and manifest.

Inputs are untrusted: sizes are bounded, member paths in the archive are resolved
without touching the file system (symlinks inside the archive are followed only within
it), blob digests and diff_ids are verified, and nothing is ever extracted to disk.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import posixpath
import re
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from pkgtool.errors import PkgtoolError
from pkgtool.fileio import TEMP_PREFIX
from pkgtool.jsonio import hashed_json
from pkgtool.oci import mediatypes
from pkgtool.oci.compress import Compression, DeterministicCompressor, HashingWriter
from pkgtool.oci.descriptor import Descriptor, Platform, check_digest, sha256_digest
from pkgtool.oci.layer import DEFAULT_LIMITS, LayerLimits, bounded_tarinfo, clean_path
from pkgtool.oci.layout import Layout
from pkgtool.oci.manifest import build_manifest, parse_manifest, platform_matches
from pkgtool.oci.normalize import normalize_layer

LAYER_MEDIA_TYPES: dict[str, str] = {
    "gzip": mediatypes.OCI_LAYER_GZIP,
    "zstd": mediatypes.OCI_LAYER_ZSTD,
}
# Layer media types we accept as input (the content is sniffed anyway; this only refuses
# foreign layers and non-layer blobs).
_INPUT_LAYER_TYPES = frozenset({
    mediatypes.OCI_LAYER, mediatypes.OCI_LAYER_GZIP, mediatypes.OCI_LAYER_ZSTD,
    mediatypes.DOCKER_LAYER_GZIP, "application/vnd.docker.image.rootfs.diff.tar",
})
_CONFIG_FIELDS = (
    "User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
    "StopSignal", "Healthcheck", "Shell", "OnBuild", "ArgsEscaped",
)
_TOP_FIELDS = ("architecture", "os", "variant", "os.version", "os.features", "author")
_HISTORY_FIELDS = ("created_by", "comment", "author")
_BLOB_NAME = re.compile(r"^blobs/sha256/([a-f0-9]{64})$")
_CONFIG_NAME = re.compile(r"^([a-f0-9]{64})\.json$")
_CHUNK = 1024 * 1024
_MAX_LINK_HOPS = 16
_REFERENCE_TYPE = "vnd.docker.reference.type"



@dataclass(frozen=True)
class RepackLimits:
    """Bounds for an untrusted image archive."""

    max_archive_bytes: int = 128 * 1024**3
    max_members: int = 100_000
    max_layers: int = 500
    max_json_bytes: int = mediatypes.MAX_MANIFEST_BYTES
    layer: LayerLimits = DEFAULT_LIMITS


DEFAULT_REPACK_LIMITS = RepackLimits()


@dataclass(frozen=True)
class RepackedImage:
    manifest: Descriptor  # OCI manifest, with the image's platform
    manifest_bytes: bytes
    config: Descriptor
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]

    @property
    def config_digest(self) -> str:
        return self.config.digest

    @property
    def platform(self) -> Platform:
        assert self.manifest.platform is not None  # always set by repack_archive
        return self.manifest.platform


@dataclass(frozen=True)
class _SourceLayer:
    member: str  # path inside the archive
    diff_id: str  # from the source config: the uncompressed input must match it
    digest: str | None = None  # OCI layout blobs: the stored bytes must match it


@dataclass(frozen=True)
class _SourceImage:
    config: dict[str, Any]
    layers: tuple[_SourceLayer, ...]


def rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- the archive


class _Archive:
    """Random access to the members of an image archive tar, never extracting."""

    def __init__(self, fileobj: IO[bytes], *, limits: RepackLimits) -> None:
        self._limits = limits
        try:
            self._tar = tarfile.open(  # noqa: SIM115 - closed in close()
                fileobj=fileobj, mode="r:", tarinfo=bounded_tarinfo(limits.layer),
                encoding="utf-8", errors="surrogateescape")
        except (tarfile.TarError, EOFError) as exc:
            raise PkgtoolError(f"image archive is not a tar ({exc})") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for count, info in enumerate(self._tar, start=1):
                if count > limits.max_members:
                    raise PkgtoolError(f"image archive has more than {limits.max_members} members")
                name = clean_path(info.name, what="image archive")
                if name:
                    self.members[name] = info
        except tarfile.TarError as exc:
            raise PkgtoolError(f"image archive is not a valid tar ({exc})") from None

    def close(self) -> None:
        self._tar.close()

    def has(self, name: str) -> bool:
        return name in self.members

    def _resolve(self, name: str) -> tarfile.TarInfo:
        path = clean_path(name, what="image archive")
        for _ in range(_MAX_LINK_HOPS):
            info = self.members.get(path)
            if info is None:
                raise PkgtoolError(f"image archive: {name!r} is missing")
            if info.isreg():
                return info
            if not (info.issym() or info.islnk()):
                raise PkgtoolError(f"image archive: {name!r} is not a regular file")
            # docker save stores a layer that occurs twice once and symlinks the second
            # (relative to its directory); hard links are relative to the archive root.
            base = posixpath.dirname(path) if info.issym() else ""
            joined = posixpath.normpath(posixpath.join(base, info.linkname))
            if joined.startswith("../") or joined == ".." or joined.startswith("/"):
                raise PkgtoolError(f"image archive: {name!r} links outside the archive")
            path = joined
        raise PkgtoolError(f"image archive: too many links resolving {name!r}")

    def open(self, name: str) -> IO[bytes]:
        reader = self._tar.extractfile(self._resolve(name))
        if reader is None:
            raise PkgtoolError(f"image archive: cannot read {name!r}")
        return reader

    def read_json(self, name: str, *, digest: str | None = None) -> Any:
        info = self._resolve(name)
        if info.size > self._limits.max_json_bytes:
            raise PkgtoolError(f"image archive: {name!r} is {info.size} bytes, over the "
                               f"{self._limits.max_json_bytes}-byte limit for JSON")
        with self.open(name) as reader:
            data = reader.read()
        if digest is not None and sha256_digest(data) != digest:
            raise PkgtoolError(f"image archive: {name!r} hashes to {sha256_digest(data)}, expected {digest}")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise PkgtoolError(f"image archive: {name!r} is not valid JSON") from None

    def check_digest(self, name: str, digest: str) -> None:
        sha = hashlib.sha256()
        with self.open(name) as reader:
            while chunk := reader.read(_CHUNK):
                sha.update(chunk)
        if "sha256:" + sha.hexdigest() != digest:
            raise PkgtoolError(f"image archive: {name!r} hashes to sha256:{sha.hexdigest()}, expected {digest}")


def _blob_member(digest: str) -> str:
    check_digest(digest)
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _config_digest_from_name(name: str) -> str | None:
    """docker-archive names configs ``<hex>.json`` (or a blob path): the name is a digest."""
    path = clean_path(name, what="image archive")
    match = _CONFIG_NAME.match(path) or _BLOB_NAME.match(path)
    return "sha256:" + match.group(1) if match else None


def _diff_ids(config: Any, what: str) -> list[str]:
    if not isinstance(config, dict):
        raise PkgtoolError(f"{what}: image config is not a JSON object")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise PkgtoolError(f"{what}: image config has no rootfs.diff_ids list")
    for diff_id in diff_ids:
        check_digest(diff_id)
    return list(diff_ids)


def _from_docker_archive(archive: _Archive, *, image: str | None, limits: RepackLimits) -> _SourceImage:
    entries = archive.read_json("manifest.json")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise PkgtoolError("image archive: manifest.json is not a non-empty list of objects")
    if image is not None:
        chosen = [e for e in entries if image in (e.get("RepoTags") or [])]
        if not chosen:
            tags = sorted(t for e in entries for t in (e.get("RepoTags") or []) if isinstance(t, str))
            raise PkgtoolError(f"image archive has no image {image!r} (it has: {', '.join(tags) or 'no tags'})")
    elif len(entries) > 1:
        raise PkgtoolError(f"image archive holds {len(entries)} images; name the one to re-pack")
    else:
        chosen = entries
    entry = chosen[0]
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list) \
            or not all(isinstance(n, str) for n in layer_names):
        raise PkgtoolError("image archive: manifest.json entry lacks Config or Layers")
    config = archive.read_json(config_name, digest=_config_digest_from_name(config_name))
    diff_ids = _diff_ids(config, "image archive")
    if len(diff_ids) != len(layer_names):
        raise PkgtoolError(f"image archive: {len(layer_names)} layers but {len(diff_ids)} diff_ids in the config")
    if len(layer_names) > limits.max_layers:
        raise PkgtoolError(f"image has {len(layer_names)} layers (limit {limits.max_layers})")
    layers = tuple(_SourceLayer(member=name, diff_id=diff_id) for name, diff_id in zip(layer_names, diff_ids, strict=True))
    return _SourceImage(config=config, layers=layers)


def _from_oci_layout(archive: _Archive, *, image: str | None, platform: Platform | None,
                     limits: RepackLimits) -> _SourceImage:
    index = archive.read_json("index.json")
    descriptor = _choose_manifest(archive, index, image=image, platform=platform, depth=0)
    raw = archive.read_json(_blob_member(descriptor.digest), digest=descriptor.digest)
    manifest = parse_manifest(hashed_json(raw), source="image archive manifest")
    if manifest.is_index or manifest.config is None:
        raise PkgtoolError("image archive: the chosen manifest is not an image manifest")
    config = archive.read_json(_blob_member(manifest.config.digest), digest=manifest.config.digest)
    diff_ids = _diff_ids(config, "image archive")
    if len(diff_ids) != len(manifest.layers):
        raise PkgtoolError(f"image archive: {len(manifest.layers)} layers but {len(diff_ids)} diff_ids in the config")
    if len(diff_ids) > limits.max_layers:
        raise PkgtoolError(f"image has {len(diff_ids)} layers (limit {limits.max_layers})")
    layers = []
    for layer, diff_id in zip(manifest.layers, diff_ids, strict=True):
        if layer.media_type not in _INPUT_LAYER_TYPES:
            raise PkgtoolError(f"image archive: unsupported layer media type {layer.media_type!r}")
        layers.append(_SourceLayer(member=_blob_member(layer.digest), diff_id=diff_id, digest=layer.digest))
    return _SourceImage(config=config, layers=tuple(layers))


def _choose_manifest(archive: _Archive, index: Any, *, image: str | None, platform: Platform | None,
                     depth: int) -> Descriptor:
    """The one image manifest an OCI layout (index.json, maybe nested indexes) holds."""
    if depth > 4:
        raise PkgtoolError("image archive: indexes nested too deeply")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise PkgtoolError("image archive: index.json has no manifests list")
    # BuildKit lists provenance/SBOM attestation manifests next to the images; skip them.
    candidates = [d for d in (Descriptor.from_json(m) for m in index["manifests"])
                  if (d.annotations or {}).get(_REFERENCE_TYPE) != "attestation-manifest"]
    if image is not None and depth == 0:
        candidates = [c for c in candidates
                      if (c.annotations or {}).get("org.opencontainers.image.ref.name") == image
                      or (c.annotations or {}).get("io.containerd.image.name") == image]
    if platform is not None:
        candidates = [c for c in candidates if c.platform is None or platform_matches(c.platform, platform)]
    if len(candidates) != 1:
        raise PkgtoolError(f"image archive: {len(candidates)} manifests match; expected exactly one "
                           "(name the image or the platform)")
    chosen = candidates[0]
    if chosen.media_type in mediatypes.INDEX_TYPES:
        nested = archive.read_json(_blob_member(chosen.digest), digest=chosen.digest)
        return _choose_manifest(archive, nested, image=image, platform=platform, depth=depth + 1)
    if chosen.media_type not in mediatypes.MANIFEST_TYPES:
        raise PkgtoolError(f"image archive: unsupported manifest media type {chosen.media_type!r}")
    return chosen


# --------------------------------------------------------------------------- the config


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def normalize_config(config: Mapping[str, Any], *, diff_ids: list[str], kept: list[bool],
                     source_date_epoch: int, labels: Mapping[str, str],
                     platform: Platform | None) -> dict[str, Any]:
    """The reproducible config for an image whose source config is ``config``.

    ``kept[i]`` says whether source layer ``i`` survived (empty layers are dropped);
    ``diff_ids`` are those of the surviving, normalized layers.
    """
    created = rfc3339(source_date_epoch)
    out: dict[str, Any] = {key: config[key] for key in _TOP_FIELDS if _present(config.get(key))}
    out.setdefault("os", "linux")
    if platform is not None:
        have = Platform(str(out.get("os", "")), str(out.get("architecture", "")), str(out.get("variant", "")))
        if "architecture" in out and not platform_matches(have, platform):
            raise PkgtoolError(f"image is for {have}, not the requested {platform}")
        out["os"], out["architecture"] = platform.os, platform.architecture
        if platform.variant:
            out["variant"] = platform.variant
    if not isinstance(out.get("architecture"), str):
        raise PkgtoolError("image config names no architecture (pass the platform)")

    source_run = config.get("config")
    run: dict[str, Any] = {}
    if isinstance(source_run, dict):
        run = {key: source_run[key] for key in _CONFIG_FIELDS if _present(source_run.get(key))}
    merged_labels = dict(run.get("Labels") or {})
    for key, value in labels.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise PkgtoolError(f"invalid image label {key!r}={value!r}")
        merged_labels[key] = value
    if merged_labels:
        run["Labels"] = merged_labels
    if run:
        out["config"] = run

    out["created"] = created
    out["history"] = _history(config.get("history"), kept, created)
    out["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    return out


def _history(source: Any, kept: list[bool], created: str) -> list[dict[str, Any]]:
    """History with the epoch as every time, consistent with the surviving layers.

    A source history whose non-empty entries do not match the layer count (or none at
    all, as from ``docker import``) is replaced by one entry per surviving layer.
    """
    usable = isinstance(source, list) and all(isinstance(h, dict) for h in source) and \
        sum(1 for h in source if not h.get("empty_layer")) == len(kept)
    if not usable:
        return [{"created": created, "created_by": "pkgtool: re-packed layer"} for k in kept if k]
    out: list[dict[str, Any]] = []
    layer = 0
    for item in cast(list[dict[str, Any]], source):
        entry: dict[str, Any] = {"created": created}
        for key in _HISTORY_FIELDS:
            if isinstance(item.get(key), str) and item[key]:
                entry[key] = item[key]
        empty = bool(item.get("empty_layer"))
        if not empty:
            empty = not kept[layer]
            layer += 1
        if empty:
            entry["empty_layer"] = True
        out.append(entry)
    return out


# --------------------------------------------------------------------------- re-packing


@dataclass(frozen=True)
class _NewLayer:
    descriptor: Descriptor
    diff_id: str


def _repack_layer(archive: _Archive, layer: _SourceLayer, layout: Layout, *, index: int,
                  source_date_epoch: int, compression: Compression,
                  limits: RepackLimits) -> _NewLayer | None:
    what = f"layer {index + 1} ({layer.member})"
    if layer.digest is not None:
        archive.check_digest(layer.member, layer.digest)
    # Anonymous temp file next to the blobs: no name to leak if we die, same file system.
    with tempfile.TemporaryFile(dir=layout.root, prefix=TEMP_PREFIX) as spool, \
            archive.open(layer.member) as source:
        compressed = HashingWriter(cast(BinaryIO, spool))
        compressor = DeterministicCompressor(compressed, compression=compression)
        try:
            result = normalize_layer(source, compressor, source_date_epoch=source_date_epoch,
                                     what=what, limits=limits.layer, spool_dir=layout.root,
                                     expect_diff_id=layer.diff_id)
        except BaseException:
            compressor.abort()
            raise
        compressor.close()
        if result.entries == 0:
            return None
        spool.seek(0)
        layout.ingest(_chunks(spool), expected_digest=compressed.digest, expected_size=compressed.size)
    descriptor = Descriptor(LAYER_MEDIA_TYPES[compression], compressed.digest, compressed.size)
    return _NewLayer(descriptor=descriptor, diff_id=result.diff_id)


def _chunks(f: IO[bytes]) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


def _seekable_archive(archive: Path | BinaryIO | Iterable[bytes], layout: Layout,
                      limits: RepackLimits, stack: list[IO[bytes]]) -> IO[bytes]:
    if isinstance(archive, (str, Path)):
        try:
            f: IO[bytes] = open(archive, "rb")  # noqa: SIM115 - closed by the caller via stack
        except OSError as exc:
            raise PkgtoolError(f"cannot read image archive {archive}: {exc.strerror or exc}") from None
        stack.append(f)
        return f
    if hasattr(archive, "read") and hasattr(archive, "seekable") and archive.seekable():
        return cast(IO[bytes], archive)
    spool = tempfile.TemporaryFile(dir=layout.root, prefix=TEMP_PREFIX)  # noqa: SIM115
    stack.append(spool)
    source: Iterable[bytes] = _chunks(cast(IO[bytes], archive)) if hasattr(archive, "read") else archive
    total = 0
    for chunk in source:
        total += len(chunk)
        if total > limits.max_archive_bytes:
            raise PkgtoolError(f"image archive is over {limits.max_archive_bytes} bytes")
        spool.write(chunk)
    spool.seek(0)
    return spool


def repack_archive(
    archive: Path | BinaryIO | Iterable[bytes],
    layout: Layout,
    *,
    source_date_epoch: int,
    labels: Mapping[str, str] | None = None,
    compression: Compression = "gzip",
    platform: Platform | None = None,
    image: str | None = None,
    tag: str | None = None,
    annotations: Mapping[str, str] | None = None,
    limits: RepackLimits = DEFAULT_REPACK_LIMITS,
) -> RepackedImage:
    """Re-pack the image in ``archive`` reproducibly into ``layout``; optionally tag it.

    ``archive`` is a docker-archive or OCI-layout tar: a path, a file object, or an
    iterable of chunks (``docker.models.images.Image.save()``).  ``image`` picks one of
    several images (a RepoTag or an OCI ref name); ``platform`` picks from a multi-arch
    layout and must agree with the config's.  ``source_date_epoch`` must come from the
    build's inputs: it becomes every timestamp in the image.
    """
    if source_date_epoch < 0:
        raise PkgtoolError(f"SOURCE_DATE_EPOCH must not be negative (got {source_date_epoch})")
    if compression not in LAYER_MEDIA_TYPES:
        raise PkgtoolError(f"unknown layer compression {compression!r}: expected gzip or zstd")
    layout.ensure()
    opened: list[IO[bytes]] = []
    try:
        reader = _Archive(_seekable_archive(archive, layout, limits, opened), limits=limits)
        try:
            if reader.has("manifest.json"):
                source = _from_docker_archive(reader, image=image, limits=limits)
            elif reader.has("index.json"):
                source = _from_oci_layout(reader, image=image, platform=platform, limits=limits)
            else:
                raise PkgtoolError("image archive has neither manifest.json (docker-archive) "
                                   "nor index.json (OCI layout)")
            new_layers: list[_NewLayer | None] = [
                _repack_layer(reader, layer, layout, index=i, source_date_epoch=source_date_epoch,
                              compression=compression, limits=limits)
                for i, layer in enumerate(source.layers)
            ]
        finally:
            reader.close()
    finally:
        for f in opened:
            f.close()

    kept = [layer for layer in new_layers if layer is not None]
    config = normalize_config(
        source.config, diff_ids=[layer.diff_id for layer in kept],
        kept=[layer is not None for layer in new_layers], source_date_epoch=source_date_epoch,
        labels=labels or {}, platform=platform,
    )
    config_bytes = hashed_json(config)
    config_descriptor = Descriptor(mediatypes.OCI_CONFIG, layout.write_blob(config_bytes), len(config_bytes))
    manifest_bytes = build_manifest(config_descriptor, [layer.descriptor for layer in kept],
                                    annotations=dict(annotations) if annotations else None)
    image_platform = Platform(config["os"], config["architecture"], config.get("variant", ""))
    manifest = Descriptor(mediatypes.OCI_MANIFEST, layout.write_blob(manifest_bytes),
                          len(manifest_bytes), platform=image_platform)
    if tag is not None:
        layout.tag(tag, manifest)
    return RepackedImage(
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        config=config_descriptor,
        layers=tuple(layer.descriptor for layer in kept),
        diff_ids=tuple(layer.diff_id for layer in kept),
    )
