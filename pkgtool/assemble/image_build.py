"""``pkgtool image build``: image YAML -> pulled images -> one file tree -> output files.

Steps, each checked before the next one spends time:

1. load and merge the YAML files; check the formats for the arch and their host tools;
2. check every image reference is pinned by digest (unless allowed), then fetch the unique
   references into the OCI layout cache in parallel (a pinned image already in the cache
   is used without touching the network, so a warm cache builds offline);
3. assemble the tree, streaming each image's layers (LinuxKit's order and layout):
   the kernel image (``kernel`` -> ``boot/kernel``, the command line -> ``boot/cmdline``,
   ``ucode`` -> ``boot/ucode.cpio``); ``init`` images into ``/``; ``kernel.tar`` into ``/``
   *after* the init images (LinuxKit writes it first; unpacked last, its ``lib/modules``
   follows a merged-/usr ``lib -> usr/lib`` symlink of the base instead of being hidden
   or breaking it); ``onboot``/``onshutdown``/``services`` bundles; volumes; ``files:``;
4. write the outputs into a staging directory inside the output directory and rename them
   into place only when every requested format succeeded.  On failure nothing is left.

Timestamps: every file in every output gets ``SOURCE_DATE_EPOCH`` if set, else 0 (the
Unix epoch; FAT-based formats clamp to 1980-01-01).  A fixed default, rather than e.g. the
newest layer's time, keeps outputs identical however the inputs were produced.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkgtool.assemble import imagetar, initrd_compression
from pkgtool.assemble.cpio import compressor, source_date_epoch, write_cpio
from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.registry import Format, select
from pkgtool.assemble.ids import (
    GroupLookup,
    IdResolver,
    UserLookup,
    allocate_ids,
    group_lookup,
    passwd_lookup,
)
from pkgtool.assemble.runtime_config import (
    build_container_config,
    bundle_layout,
    bundle_runtime,
)
from pkgtool.assemble.tree import BytesContent, Inode, Kind, Tree, add_files, ensure_console
from pkgtool.errors import CacheError, PkgtoolError, UsageError
from pkgtool.jsonio import bundle_json
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.spec.image import Id, ImageEntry, ImageSpec, image_references, load_image_spec, to_data
from pkgtool.streams import chunk_file

Progress = Callable[[str], None]
# fetch(ref) -> the descriptor of the ref's manifest or index, whose blobs are in the cache.
Fetcher = Callable[[str], Descriptor]
_FETCH_WORKERS = 4
_BOOT_FILES = ("boot/kernel", "boot/cmdline", "boot/ucode.cpio")
_REMOVE_LAYER = 1 << 31


@dataclass(frozen=True)
class PulledImage:
    """One image resolved to the arch's manifest, with its config and layers in the cache."""

    ref: str
    manifest_digest: str
    config: Mapping[str, Any]
    layers: tuple[Descriptor, ...]

    @property
    def container_config(self) -> Mapping[str, Any]:
        cfg = self.config.get("config")
        return cfg if isinstance(cfg, dict) else {}


def is_pinned(ref: str) -> bool:
    return "@sha256:" in ref


def pinned_digest(ref: str) -> str | None:
    return "sha256:" + ref.rsplit("@sha256:", 1)[1] if is_pinned(ref) else None


# --------------------------------------------------------------------------- fetching

def cached_fetcher(layout: Any, fallback: Fetcher | None, arch: str | None = None) -> Fetcher:
    """Use a pinned image straight from the cache when everything the build reads of it is
    there (for ``arch``: its manifest, config and layers); else ``fallback``.

    An index can be in the cache with only some of its platforms (an amd64 build pulled
    it), so the root blob alone does not make a hit.
    """
    def fetch(ref: str) -> Descriptor:
        digest = pinned_digest(ref)
        if digest is not None and layout.has_blob(digest):
            data = layout.read_blob(digest, max_size=mediatypes.MAX_MANIFEST_BYTES)
            root = Descriptor(media_type=_media_type(data, ref), digest=digest, size=len(data))
            if arch is None or _complete(layout, ref, root, arch):
                return root
        if fallback is None:
            raise PkgtoolError(f"{ref}: not in the cache and no registry to pull it from")
        return fallback(ref)

    return fetch


def _complete(layout: Any, ref: str, root: Descriptor, arch: str) -> bool:
    """Whether the cache holds every blob of ``root``'s ``linux/arch`` image."""
    manifest = root
    if root.media_type in mediatypes.INDEX_TYPES:
        entries = [Descriptor.from_json(m) for m in _json_blob(layout, root.digest, ref).get("manifests") or []]
        chosen = [d for d in entries if d.platform is not None and d.platform.os == "linux" and d.platform.architecture == arch]
        if not chosen:
            return True  # resolve_platform will say which platforms there are
        manifest = chosen[0]
    if not layout.has_blob(manifest.digest):
        return False
    doc = _json_blob(layout, manifest.digest, ref)
    children = [doc.get("config"), *(doc.get("layers") or [])]
    return all(isinstance(c, dict) and layout.has_blob(str(c.get("digest", ""))) for c in children)


def registry_fetcher(layout: Any, client_factory: Callable[[], Any], arch: str | None) -> Fetcher:
    """Pull through the registry client (imported lazily: it brings in HTTP libraries).

    ``arch`` limits the pull to that platform's manifest; None pulls every platform.
    """
    platforms = [Platform("linux", arch)] if arch else None

    def fetch(ref: str) -> Descriptor:
        # Imported on the first cache miss only: a warm, pinned build never loads HTTP code.
        from pkgtool.oci.transfer import pull

        descriptor: Descriptor = pull(client_factory(), ref, layout, platforms=platforms)
        return descriptor

    return fetch


def default_client_factory(registry: str | None) -> Callable[[], Any]:
    """Makes registry clients for pulls: the one place that knows the client's constructor."""
    from pkgtool.oci.registry import RegistryClient

    def make() -> Any:
        return RegistryClient()

    return make


def _media_type(data: bytes, ref: str) -> str:
    try:
        doc = json.loads(data)
    except ValueError:
        raise PkgtoolError(f"{ref}: manifest is not JSON") from None
    if not isinstance(doc, dict):
        raise PkgtoolError(f"{ref}: manifest is not a JSON object")
    media_type = doc.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    # OCI manifests may omit mediaType: tell index from manifest by their fields.
    return mediatypes.OCI_INDEX if "manifests" in doc else mediatypes.OCI_MANIFEST


def _json_blob(layout: Any, digest: str, ref: str) -> dict[str, Any]:
    data = layout.read_blob(digest, max_size=mediatypes.MAX_MANIFEST_BYTES)
    try:
        doc = json.loads(data)
    except ValueError:
        raise PkgtoolError(f"{ref}: blob {digest} is not JSON") from None
    if not isinstance(doc, dict):
        raise PkgtoolError(f"{ref}: blob {digest} is not a JSON object")
    return doc


def resolve_platform(layout: Any, ref: str, root: Descriptor, arch: str) -> PulledImage:
    """The ``linux/arch`` image under ``root`` (an index or a single manifest)."""
    descriptor = root
    if root.media_type in mediatypes.INDEX_TYPES:
        index = _json_blob(layout, root.digest, ref)
        candidates = [Descriptor.from_json(m) for m in index.get("manifests") or []]
        matches = [d for d in candidates if d.platform is not None and d.platform.os == "linux" and d.platform.architecture == arch]
        if not matches:
            available = ", ".join(sorted(str(d.platform) for d in candidates if d.platform)) or "none"
            raise PkgtoolError(f"{ref}: no image for linux/{arch} (available: {available})")
        descriptor = matches[0]
    elif root.media_type not in mediatypes.MANIFEST_TYPES:
        raise PkgtoolError(f"{ref}: unsupported media type {root.media_type}")
    manifest = _json_blob(layout, descriptor.digest, ref)
    config_desc = Descriptor.from_json(manifest.get("config"))
    config = _json_blob(layout, config_desc.digest, ref)
    image_arch = config.get("architecture")
    if root.media_type in mediatypes.MANIFEST_TYPES and image_arch and image_arch != arch:
        raise PkgtoolError(f"{ref}: image is for {image_arch}, not {arch}")
    layers = tuple(Descriptor.from_json(layer) for layer in manifest.get("layers") or [])
    return PulledImage(ref=ref, manifest_digest=descriptor.digest, config=config, layers=layers)


def fetch_all(refs: Sequence[str], fetch: Fetcher, *, progress: Progress) -> dict[str, Descriptor]:
    """Fetch unique references concurrently; the first failure is raised."""
    unique = list(dict.fromkeys(refs))
    results: dict[str, Descriptor] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=_FETCH_WORKERS) as pool:
        futures = {pool.submit(fetch, ref): ref for ref in unique}
        for future in concurrent.futures.as_completed(futures):
            ref = futures[future]
            results[ref] = future.result()
            progress(f"fetched {ref}")
    return results


# --------------------------------------------------------------------------- assembly

def flatten(layout: Any, image: PulledImage, tree: Tree) -> Tree:
    """The image's layers applied in order to a new tree sharing ``tree``'s spill store."""
    flat = Tree(store=tree.store)
    for number, layer in enumerate(image.layers, start=1):
        with layout.open_blob(layer.digest) as stream:
            flat.apply_layer(stream, image=image.ref, layer=number, blob_path=layout.blob_path(layer.digest))
            # Drain to the end so the cache's reader verifies the blob's digest.
            while stream.read(1 << 20):
                pass
    return flat


def _remove(tree: Tree, path: str) -> None:
    head, _, leaf = path.rpartition("/")
    tree.whiteout(f"{head}/.wh.{leaf}" if head else f".wh.{leaf}", layer=_REMOVE_LAYER)


@dataclass
class Assembled:
    tree: Tree
    kernel: Inode | None
    cmdline: str
    ucode: Inode | None
    kernel_config: bytes | None = None  # the kernel image's /config, if it has one


class Assembler:
    """Builds the image tree from a spec and pulled images."""

    def __init__(self, spec: ImageSpec, images: Mapping[str, PulledImage], layout: Any, *, progress: Progress) -> None:
        self.spec, self.images, self.layout, self.progress = spec, images, layout, progress
        self.id_map = allocate_ids(spec)
        self.tree = Tree()
        self._extracted: dict[str, str] = {}  # ref -> where its files already are (dedup)
        self._lookups: dict[str, tuple[UserLookup, GroupLookup]] = {}

    def assemble(self) -> Assembled:
        try:
            kernel, ucode, kernel_tar, config = self._kernel()
            for item in self.spec.init:
                self.progress(f"init {item.image}")
                flat = flatten(self.layout, self.images[item.image], self.tree)
                imagetar.rewrite(flat, init=True)
                self.tree.overlay(flat, what=item.image)
            if kernel_tar is not None:
                self._unpack_kernel_tar(kernel_tar)
            for section in ("onboot", "onshutdown", "services"):
                entries: tuple[ImageEntry, ...] = getattr(self.spec, section)
                for index, entry in enumerate(entries):
                    self.progress(f"{section} {entry.name}")
                    self._bundle(section, index, entry)
            self._volumes()
            add_files(self.tree, self.spec.files, resolve_id=self._resolve_id, metadata=self._metadata)
            # Every bootable output starts this tree as an initramfs, which needs a console.
            ensure_console(self.tree)
            cmdline = self.spec.kernel.cmdline or ""
            return Assembled(self.tree, kernel, cmdline, ucode, kernel_config=config)
        except BaseException:
            self.tree.close()
            raise

    # -- kernel

    def _kernel(self) -> tuple[Inode | None, Inode | None, Inode | None, bytes | None]:
        k = self.spec.kernel
        if not k.image:
            return None, None, None, None
        self.progress(f"kernel {k.image}")
        flat = flatten(self.layout, self.images[k.image], self.tree)
        where = f"{k.origin or 'kernel'}: {k.image}"

        def member(name: str, what: str) -> Inode:
            inode = flat.get(name)
            if inode is None or inode.kind is not Kind.FILE:
                raise UsageError(f"{where}: no {what} {name!r} in the kernel image")
            return inode

        kernel = member(k.binary_name, "kernel binary")
        kernel_tar = member(k.tar_name, "kernel tarball") if k.tar_name else None
        ucode = member(k.ucode, "microcode archive") if k.ucode else None
        self.tree.put("boot", Inode(Kind.DIR, mode=0o755))
        self.tree.put("boot/kernel", Inode(Kind.FILE, mode=kernel.mode, content=kernel.content))
        self.tree.put("boot/cmdline", Inode(Kind.FILE, mode=0o644, content=BytesContent((k.cmdline or "").encode())))
        if ucode is not None:
            self.tree.put("boot/ucode.cpio", Inode(Kind.FILE, mode=ucode.mode, content=ucode.content))
        config = flat.get("config")
        config_bytes = flat.read("config") if config is not None and config.kind is Kind.FILE else None
        flat.close()
        return kernel, ucode, kernel_tar, config_bytes

    def _unpack_kernel_tar(self, inode: Inode) -> None:
        k = self.spec.kernel
        ktree = Tree(store=self.tree.store)
        chunks = inode.content.chunks() if inode.content else iter(())
        stream = chunk_file(iter(chunks))
        ktree.apply_layer(stream, image=f"{k.image}: {k.tar_name}", layer=1)
        self.tree.overlay(ktree, what=f"{k.image}: {k.tar_name}", keep_dir_symlinks=True)

    # -- containers

    def _bundle(self, section: str, index: int, entry: ImageEntry) -> None:
        image = self.images[entry.image]
        earlier = self._extracted.get(entry.image)
        flat = None
        users = groups = None
        if earlier is None:
            flat = flatten(self.layout, image, self.tree)
            imagetar.rewrite(flat, init=False)
            users = passwd_lookup(_text(flat, "etc/passwd"))
            groups = group_lookup(_text(flat, "etc/group"))
        else:
            users, groups = self._lookups[entry.image]
        cfg = build_container_config(
            entry, image_config=image.container_config, id_map=self.id_map, volumes=self.spec.volumes,
            lookup_user=users, lookup_group=groups,
        )
        layout = bundle_layout(section, index, entry.name, readonly=cfg.readonly)
        if flat is not None:
            self.tree.overlay(flat, at=layout.lower, what=entry.image)
            self._extracted[entry.image] = layout.lower
            self._lookups[entry.image] = (users, groups)
        self.tree.put(layout.path, Inode(Kind.DIR, mode=0o755))
        mountpoints = list(layout.mountpoints)
        if earlier is not None and layout.readonly:
            mountpoints.append(layout.rootfs)
        for path in mountpoints:
            if self.tree.get(path) is None:
                self.tree.put(path, Inode(Kind.DIR, mode=0o755))
        runtime = bundle_runtime(cfg.runtime, layout, lower=earlier)
        self.tree.put(f"{layout.path}/config.json", Inode(Kind.FILE, mode=0o644, content=BytesContent(bundle_json(cfg.oci))))
        self.tree.put(f"{layout.path}/runtime.json", Inode(Kind.FILE, mode=0o644, content=BytesContent(bundle_json(runtime))))

    def _volumes(self) -> None:
        # Volumes live at containers/volumes/NAME/merged; an image volume's files go there.
        for volume in self.spec.volumes:
            merged = volume.merged_dir.lstrip("/")
            if volume.image:
                flat = flatten(self.layout, self.images[volume.image], self.tree)
                self.tree.overlay(flat, at=merged, what=volume.image)
            elif self.tree.get(merged) is None:
                self.tree.put(merged, Inode(Kind.DIR, mode=0o755))

    # -- files

    def _resolve_id(self, value: Id) -> int:
        # The files section belongs to no image: numbers, root and container names only.
        return IdResolver(self.id_map, fail=lambda message: UsageError(f"files: {message}")).uid(value)

    def _metadata(self, kind: str) -> bytes:
        data = to_data(self.spec)
        if kind == "json":
            return json.dumps(data, indent=4, sort_keys=False).encode()
        import yaml

        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).encode()


def _text(tree: Tree, path: str) -> str:
    try:
        return tree.read(path).decode("utf-8", "replace")
    except KeyError:
        return ""


# --------------------------------------------------------------------------- outputs

def _write_content(inode: Inode, dest: Path) -> Path:
    with dest.open("wb") as out:
        for chunk in inode.content.chunks() if inode.content else ():
            out.write(chunk)
    return dest


def _initrd_builder(tree: Tree, work: Path, *, mtime: int, compression: str) -> Callable[[], Path]:
    def build() -> Path:
        dest = work / "initrd.img"
        with dest.open("wb") as out, compressor(out, compression) as stream:
            write_cpio(tree, stream, mtime=mtime)
        return dest

    return build


def write_outputs(
    assembled: Assembled,
    formats: Sequence[Format],
    *,
    out_dir: Path,
    name: str,
    arch: str,
    mtime: int,
    compression: str,
    progress: Progress,
) -> list[Path]:
    """Write every format into a staging directory, then move the files into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".pkgtool-tmp-", dir=out_dir))
    try:
        work = stage / ".work"
        work.mkdir()
        kernel_path = work / "kernel"
        if assembled.kernel is not None:
            _write_content(assembled.kernel, kernel_path)
        ucode_path = _write_content(assembled.ucode, work / "ucode.cpio") if assembled.ucode is not None else None
        inp = FormatInput(
            name=name, arch=arch, mtime=mtime, tree=assembled.tree, kernel=kernel_path, cmdline=assembled.cmdline,
            work=work, ucode=ucode_path, compression=compression,
            make_initrd=_initrd_builder(assembled.tree, work, mtime=mtime, compression=compression),
        )
        written: list[Path] = []
        # `tar` is the whole tree, boot files included: write it before they are taken out.
        ordered = sorted(formats, key=lambda f: f.name != "tar")
        stripped = False
        for fmt in ordered:
            if fmt.needs_kernel and assembled.kernel is None:
                raise UsageError(f"format {fmt.name} needs a kernel: add a kernel: section to the YAML")
            if fmt.name != "tar" and not stripped:
                for boot_file in _BOOT_FILES:
                    _remove(assembled.tree, boot_file)
                stripped = True
            progress(f"writing {fmt.name}")
            written.extend(fmt.writer(inp, stage))
        final: list[Path] = []
        for path in dict.fromkeys(written):
            target = out_dir / path.name
            os.replace(path, target)
            final.append(target)
        return final
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# --------------------------------------------------------------------------- entry point

def default_name(yaml_paths: Sequence[Path]) -> str:
    """LinuxKit's default: the first YAML's file name without its extension."""
    stem = yaml_paths[0].name
    for ext in (".yml", ".yaml"):
        if stem.endswith(ext):
            return stem[: -len(ext)]
    return stem


def build_image(
    yaml_paths: Sequence[Path],
    *,
    formats: Sequence[str],
    arch: str,
    out_dir: Path,
    name: str | None = None,
    cache: Path,
    registry_client_factory: Callable[[], Any] | None = None,
    progress: Progress | None = None,
    allow_unpinned: bool = False,
    compression: str = "auto",
    source_date_epoch_value: int | None = None,
    fetcher: Fetcher | None = None,
) -> list[Path]:
    """Build the image described by ``yaml_paths`` and return the output files written.

    ``registry_client_factory`` makes a registry client for pulls (one per pull, so pulls
    can run in threads); ``fetcher`` replaces the whole fetch step (tests, offline use).
    """
    from pkgtool.oci.layout import Layout

    report: Progress = progress or (lambda _msg: None)
    initrd_compression.check_choice(compression)
    spec = load_image_spec(list(yaml_paths))
    chosen = select(formats, arch)
    image_name = name or default_name(yaml_paths)
    if not image_name or "/" in image_name or image_name.startswith("."):
        raise UsageError(f"invalid image name {image_name!r}")
    mtime = source_date_epoch_value if source_date_epoch_value is not None else source_date_epoch(0)
    refs = [ref for _, ref in image_references(spec)]
    unpinned = [ref for ref in refs if not is_pinned(ref)]
    if unpinned and not allow_unpinned:
        raise UsageError(f"image {unpinned[0]!r} is not pinned by digest: run `pkgtool image lock` first (or allow unpinned images)")
    layout = Layout(cache)
    layout.ensure()
    if fetcher is None:
        pull = registry_fetcher(layout, registry_client_factory, arch) if registry_client_factory is not None else None
        fetcher = cached_fetcher(layout, pull, arch)
    roots = fetch_all(refs, fetcher, progress=report)
    images: dict[str, PulledImage] = {}
    for ref, root in roots.items():
        digest = pinned_digest(ref)
        if digest is not None and root.digest != digest:
            raise PkgtoolError(f"{ref}: fetched {root.digest}, which is not the pinned digest")
        try:
            images[ref] = resolve_platform(layout, ref, root, arch)
        except CacheError as exc:
            raise PkgtoolError(f"{ref}: {exc}") from None
    assembled = Assembler(spec, images, layout, progress=report).assemble()
    try:
        compression = initrd_compression.choose(compression, assembled.kernel_config,
                                                kernel=spec.kernel.image or "(none)")
        return write_outputs(assembled, chosen, out_dir=out_dir, name=image_name, arch=arch, mtime=mtime,
                             compression=compression, progress=report)
    finally:
        assembled.tree.close()
