"""``pkgtool image build``: image YAML -> pulled images -> units -> output files.

Steps, each checked before the next one spends time:

1. load and merge the YAML files; check the formats for the arch and their host tools, and
   that the output directory can be written;
2. check every image reference is pinned by digest (unless allowed), then resolve the unique
   references through the cache in front of the registry, in parallel (a pinned image
   already in the cache is used without touching the network, so a warm cache builds
   offline);
3. plan the units of the image in LinuxKit's order (:mod:`pkgtool.assemble.units`): ``init``
   images into ``/``; ``kernel.tar`` into ``/`` *after* them (LinuxKit writes it first;
   unpacked last, its ``lib/modules`` follows a merged-/usr ``lib -> usr/lib`` symlink of the
   base instead of being hidden or breaking it); ``onboot``/``onshutdown``/``services``
   bundles; volumes; then ``files:`` and ``/dev/console``;
4. write the outputs into a staging directory inside the output directory and rename them
   into place only when every requested format succeeded.  On failure nothing is left.
   Formats that boot a kernel and an initramfs (kernel+initrd, ISOs, disks) take the initrd
   made of one cached segment per unit (:mod:`pkgtool.assemble.segments`), so an unchanged
   unit is never rebuilt; formats that hold the whole file system (tar, squashfs) build the
   tree from every unit, with the kernel files under ``boot/`` for ``tar``.

Timestamps: every file in every output gets ``SOURCE_DATE_EPOCH`` if set, else 0 (the
Unix epoch; FAT-based formats clamp to 1980-01-01).  A fixed default, rather than e.g. the
newest layer's time, keeps outputs identical however the inputs were produced.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pkgtool.assemble import initrd_compression
from pkgtool.assemble.artifacts import ArtifactCache
from pkgtool.assemble.cpio import source_date_epoch
from pkgtool.assemble.files import add_files, ensure_console
from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.registry import Format, select
from pkgtool.assemble.ids import IdResolver
from pkgtool.assemble.images import PulledImage, is_pinned, pull_all
from pkgtool.assemble.kernel_parts import KernelFiles, KernelParts
from pkgtool.assemble.segments import Paths, SegmentBuilder
from pkgtool.assemble.units import UnitPlanner
from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.oci.filetree import BytesContent, FileRange, Inode, Kind, SpillStore, Tree
from pkgtool.oci.layout import Layout
from pkgtool.oci.source import CachedSource
from pkgtool.spec.image import Id, ImageSpec, image_references, load_image_spec, to_data

if TYPE_CHECKING:
    from pkgtool.oci.registry import RegistryClient

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- the image

_BOOT_FILES = ("boot/kernel", "boot/cmdline", "boot/ucode.cpio")
_REMOVE_LAYER = 1 << 31


class ImageParts:
    """One build's units, kernel files and YAML-only files, put together on demand."""

    def __init__(self, spec: ImageSpec, images: Mapping[str, PulledImage], *, layout: Layout | None,
                 work: Path, store: SpillStore, progress: Progress) -> None:
        self.spec, self.images, self.work, self.store, self.progress = spec, images, work, store, progress
        self.artifacts = ArtifactCache(layout) if layout is not None else None
        kernel = spec.kernel
        self.kernel_files = (KernelFiles(kernel, images[kernel.image], artifacts=self.artifacts, work=work,
                                         store=store, progress=progress) if kernel.image else None)
        self.planner = UnitPlanner(spec, images, progress=progress,
                                   kernel_tar=self.kernel_files.modules if self.kernel_files else None)
        self.units = self.planner.units()
        self.kernel: KernelParts | None = self.kernel_files.parts() if self.kernel_files else None
        self.boot_files = True

    def close(self) -> None:
        if self.kernel_files is not None:
            self.kernel_files.close()

    # -- the files section: the same code for the whole tree and the initrd's last segment

    def _resolve_id(self, value: Id) -> int:
        # The files section belongs to no image: numbers, root and container names only.
        return IdResolver(self.planner.id_map, fail=lambda message: UsageError(f"files: {message}")).uid(value)

    def _metadata(self, kind: str) -> bytes:
        data = to_data(self.spec)
        if kind == "json":
            return json.dumps(data, indent=4, sort_keys=False).encode()
        import yaml

        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).encode()

    def files_segment(self, before: Paths) -> tuple[Tree, set[str]]:
        """The ``files:`` section and the console over what the segments ``before`` hold."""
        tree = Tree(store=self.store)

        def exists(path: str) -> bool:
            return tree.get(path) is not None or before.exists(path)

        put = add_files(tree, self.spec.files, resolve_id=self._resolve_id, metadata=self._metadata, exists=exists)
        put |= ensure_console(tree, exists=exists)
        return tree, put

    # -- outputs

    def initrd(self, dest: Path, *, compression: str, mtime: int) -> Path:
        builder = SegmentBuilder(self.units, artifacts=self.artifacts, store=self.store, compression=compression,
                                 mtime=mtime, work=self.work, progress=self.progress)
        return builder.build(dest, self.files_segment)

    def whole_tree(self) -> Tree:
        tree = Tree(store=self.store)
        if self.kernel is not None and self.boot_files:
            self._boot_files(tree, self.kernel)
        for unit in self.units:
            tree.overlay(unit.build(self.store), what=unit.name, keep_dir_symlinks=True)
        add_files(tree, self.spec.files, resolve_id=self._resolve_id, metadata=self._metadata)
        # Every bootable output starts this tree as an initramfs, which needs a console.
        ensure_console(tree)
        return tree

    def _boot_files(self, tree: Tree, kernel: KernelParts) -> None:
        tree.put("boot", Inode(Kind.DIR, mode=0o755))
        tree.put("boot/kernel", Inode(Kind.FILE, mode=kernel.binary_mode, content=_file(kernel.binary)))
        cmdline = (self.spec.kernel.cmdline or "").encode()
        tree.put("boot/cmdline", Inode(Kind.FILE, mode=0o644, content=BytesContent(cmdline)))
        if kernel.ucode is not None:
            tree.put("boot/ucode.cpio", Inode(Kind.FILE, mode=0o644, content=_file(kernel.ucode)))


def _file(path: Path) -> FileRange:
    return FileRange(path, 0, path.stat().st_size)


def _remove(tree: Tree, path: str) -> None:
    tree.hide(path, layer=_REMOVE_LAYER)


def write_outputs(
    parts: ImageParts,
    formats: Sequence[Format],
    *,
    stage: Path,
    out_dir: Path,
    name: str,
    arch: str,
    mtime: int,
    compression: str,
    progress: Progress,
) -> list[Path]:
    """Write every format into ``stage``, then move the files into ``out_dir``."""
    work = parts.work
    kernel = parts.kernel
    inp = FormatInput(
        name=name, arch=arch, mtime=mtime, kernel=kernel.binary if kernel else work / "no-kernel",
        cmdline=parts.spec.kernel.cmdline or "", work=work, ucode=kernel.ucode if kernel else None,
        compression=compression, make_tree=parts.whole_tree,
        make_initrd=lambda: parts.initrd(work / "initrd.img", compression=compression, mtime=mtime),
    )
    written: list[Path] = []
    # `tar` is the whole tree, boot files included: write it before they are taken out.
    ordered = sorted(formats, key=lambda f: f.name != "tar")
    for fmt in ordered:
        if fmt.needs_kernel and kernel is None:
            raise UsageError(f"format {fmt.name} needs a kernel: add a kernel: section to the YAML")
        if fmt.name != "tar" and parts.boot_files:
            parts.boot_files = False  # a tree built from now on has no boot/ files
            if "tree" in inp.__dict__:
                for boot_file in _BOOT_FILES:
                    _remove(inp.tree, boot_file)
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
    compression: str = "auto",
    source_date_epoch_value: int | None = None,
) -> list[Path]:
    """Build the image described by ``yaml_paths`` and return the output files written.

    Images are read from the cache at ``cache``, and, for what it lacks, from the registry
    through a client ``registry_client_factory`` makes (only on the first miss); without a
    factory the build uses the cache alone.
    """
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
    created = not out_dir.exists()
    check_output_dir(out_dir)
    try:
        return _build(spec, refs, chosen, cache=cache, out_dir=out_dir, name=image_name, arch=arch, mtime=mtime,
                      compression=compression, client_factory=registry_client_factory, progress=report)
    except BaseException:
        if created:
            # A failed build leaves no trace: not even the output directory it made.
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise


def _build(spec: ImageSpec, refs: Sequence[str], chosen: Sequence[Format], *, cache: Path, out_dir: Path,
           name: str, arch: str, mtime: int, compression: str,
           client_factory: Callable[[], RegistryClient] | None, progress: Progress) -> list[Path]:
    report = progress
    image_name = name
    layout = Layout(cache)
    layout.ensure()
    images = pull_all(refs, CachedSource(layout, client_factory), arch, progress=report)
    stage = _staging_dir(out_dir)
    store = SpillStore()
    parts: ImageParts | None = None
    try:
        work = stage / ".work"
        work.mkdir()
        parts = ImageParts(spec, images, layout=layout, work=work, store=store, progress=report)
        compression = initrd_compression.choose(compression, parts.kernel.config if parts.kernel else None,
                                                kernel=spec.kernel.image or "(none)")
        return write_outputs(parts, chosen, stage=stage, out_dir=out_dir, name=image_name, arch=arch, mtime=mtime,
                             compression=compression, progress=report)
    finally:
        if parts is not None:
            parts.close()
        store.close()
        shutil.rmtree(stage, ignore_errors=True)
