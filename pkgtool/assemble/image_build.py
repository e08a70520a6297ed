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

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pkgtool.assemble import imagetar
from pkgtool.assemble.cpio import compressor, source_date_epoch, write_cpio
from pkgtool.assemble.files import add_files, ensure_console
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
from pkgtool.assemble.images import PulledImage, is_pinned, pull_all
from pkgtool.assemble.runtime_config import (
    build_container_config,
    bundle_layout,
    bundle_runtime,
)
from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.jsonio import bundle_json
from pkgtool.oci.filetree import BytesContent, Inode, Kind, Tree
from pkgtool.oci.layer import decompressed_chunks, read_entries
from pkgtool.oci.source import CachedSource
from pkgtool.spec.image import Id, ImageEntry, ImageSpec, image_references, load_image_spec, to_data
from pkgtool.streams import chunk_file

if TYPE_CHECKING:
    from pkgtool.oci.registry import RegistryClient

Progress = Callable[[str], None]
_BOOT_FILES = ("boot/kernel", "boot/cmdline", "boot/ucode.cpio")
_REMOVE_LAYER = 1 << 31


# --------------------------------------------------------------------------- assembly

def flatten(image: PulledImage, tree: Tree) -> Tree:
    """The image's layers applied in order to a new tree sharing ``tree``'s spill store."""
    flat = Tree(store=tree.store)
    for number, layer in enumerate(image.layers, start=1):
        flat.apply_layer(layer, number=number)
    return flat


def _remove(tree: Tree, path: str) -> None:
    tree.hide(path, layer=_REMOVE_LAYER)


@dataclass
class Assembled:
    tree: Tree
    kernel: Inode | None
    cmdline: str
    ucode: Inode | None


class Assembler:
    """Builds the image tree from a spec and pulled images."""

    def __init__(self, spec: ImageSpec, images: Mapping[str, PulledImage], *, progress: Progress) -> None:
        self.spec, self.images, self.progress = spec, images, progress
        self.id_map = allocate_ids(spec)
        self.tree = Tree()
        self._extracted: dict[str, str] = {}  # ref -> where its files already are (dedup)
        self._lookups: dict[str, tuple[UserLookup, GroupLookup]] = {}

    def assemble(self) -> Assembled:
        try:
            kernel, ucode, kernel_tar = self._kernel()
            for item in self.spec.init:
                self.progress(f"init {item.image}")
                flat = flatten(self.images[item.image], self.tree)
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
            return Assembled(self.tree, kernel, cmdline, ucode)
        except BaseException:
            self.tree.close()
            raise

    # -- kernel

    def _kernel(self) -> tuple[Inode | None, Inode | None, Inode | None]:
        k = self.spec.kernel
        if not k.image:
            return None, None, None
        self.progress(f"kernel {k.image}")
        flat = flatten(self.images[k.image], self.tree)
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
        flat.close()
        return kernel, ucode, kernel_tar

    def _unpack_kernel_tar(self, inode: Inode) -> None:
        k = self.spec.kernel
        what = f"{k.image}: {k.tar_name}"
        ktree = Tree(store=self.tree.store)
        stream = chunk_file(iter(inode.content.chunks() if inode.content else ()))
        ktree.apply_entries(read_entries(chunk_file(decompressed_chunks(stream, what=what)), what=what), number=1)
        self.tree.overlay(ktree, what=what, keep_dir_symlinks=True)

    # -- containers

    def _bundle(self, section: str, index: int, entry: ImageEntry) -> None:
        image = self.images[entry.image]
        earlier = self._extracted.get(entry.image)
        flat = None
        users = groups = None
        if earlier is None:
            flat = flatten(image, self.tree)
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
                flat = flatten(self.images[volume.image], self.tree)
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
    stage = _staging_dir(out_dir)
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
            try:
                written.extend(fmt.writer(inp, stage))
            except OSError as exc:
                # A full disk or a vanished directory: one line, and the staging dir goes.
                raise PkgtoolError(f"writing {fmt.name} into {out_dir}: {exc.strerror or exc}") from None
        final: list[Path] = []
        for path in dict.fromkeys(written):
            target = out_dir / path.name
            os.replace(path, target)
            final.append(target)
        return final
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _staging_dir(out_dir: Path) -> Path:
    """A fresh staging directory inside ``out_dir`` (created if missing), or one clear line
    saying why the output directory cannot take the outputs."""
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--dir {out_dir}: exists and is not a directory")
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".pkgtool-tmp-", dir=out_dir))
    except OSError as exc:
        raise UsageError(f"--dir {out_dir}: cannot write there ({exc.strerror or exc})") from None


def check_output_dir(out_dir: Path) -> None:
    """Fail before any work if the outputs could not be written (the staging directory is
    made and removed again, so a read-only or foreign path is caught up front)."""
    shutil.rmtree(_staging_dir(out_dir), ignore_errors=True)


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
    registry_client_factory: Callable[[], RegistryClient] | None = None,
    progress: Progress | None = None,
    allow_unpinned: bool = False,
    compression: str = "gzip",
    source_date_epoch_value: int | None = None,
) -> list[Path]:
    """Build the image described by ``yaml_paths`` and return the output files written.

    Images are read from the cache at ``cache``, and, for what it lacks, from the registry
    through a client ``registry_client_factory`` makes (only on the first miss); without a
    factory the build uses the cache alone.
    """
    from pkgtool.oci.layout import Layout

    report: Progress = progress or (lambda _msg: None)
    if compression not in ("gzip", "zstd"):
        raise UsageError(f"unknown initrd compression {compression!r} (gzip or zstd)")
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
    check_output_dir(out_dir)
    layout = Layout(cache)
    layout.ensure()
    images = pull_all(refs, CachedSource(layout, registry_client_factory), arch, progress=report)
    assembled = Assembler(spec, images, progress=report).assemble()
    try:
        return write_outputs(assembled, chosen, out_dir=out_dir, name=image_name, arch=arch, mtime=mtime,
                             compression=compression, progress=report)
    finally:
        assembled.tree.close()
