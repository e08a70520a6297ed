"""The units an OS image is assembled from, in LinuxKit's order, each a tree of its own.

1. each ``init`` image, rewritten as LinuxKit rewrites init images, at ``/``;
2. the kernel's modules (``kernel.tar`` of the kernel image) at ``/``, after the init images:
   its ``lib/modules`` follows a merged-/usr ``lib -> usr/lib`` symlink of an init image, so
   directories that an init image has as a symlink are not emitted again;
3. every ``onboot``, ``onshutdown`` and ``services`` container as a bundle under
   ``containers/`` (``config.json``, ``runtime.json``, its files in ``lower`` or ``rootfs``);
   a container whose image an earlier bundle already holds points at that one's files;
4. every volume at ``containers/volumes/NAME/merged``.

The ``files:`` section and ``/dev/console`` come last and are not units: what they create
depends on what the units before them contain (see :mod:`pkgtool.assemble.image_build`).

A unit's :attr:`Unit.inputs` are everything that decides its tree: image digests (for this
arch), the YAML entry, what LinuxKit's id allocation gave each container, the volumes a
bundle may mount.  The initrd segment cache (:mod:`pkgtool.assemble.segments`) keys on them,
so an unchanged unit is never rebuilt and a changed one always is.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pkgtool.assemble import imagetar
from pkgtool.assemble.ids import GroupLookup, UserLookup, allocate_ids, group_lookup, passwd_lookup
from pkgtool.assemble.images import PulledImage
from pkgtool.assemble.runtime_config import (
    ContainerConfig,
    build_container_config,
    bundle_layout,
    bundle_runtime,
)
from pkgtool.jsonio import bundle_json
from pkgtool.oci.filetree import BytesContent, Inode, Kind, SpillStore, Tree
from pkgtool.spec.image import ImageEntry, ImageSpec

Progress = Callable[[str], None]
# Gives the kernel's modules tree (kernel.tar unpacked) on demand: flattening the kernel image
# is only worth it when the modules segment must be built.
KernelTar = Callable[[SpillStore], Tree]


@dataclass
class Unit:
    """One piece of the image: ``build`` makes its tree (rooted at ``/``) in a spill store;
    ``shadowed_by_symlinks`` says its directories that earlier units have as symlinks are
    left out (the kernel's modules under a merged /usr)."""

    kind: str  # init | kernel-modules | bundle | volume
    name: str
    inputs: dict[str, Any]
    build: Callable[[SpillStore], Tree] = field(repr=False)
    shadowed_by_symlinks: bool = False


def flatten(image: PulledImage, store: SpillStore) -> Tree:
    """The image's layers applied in order to a new tree in ``store``."""
    flat = Tree(store=store)
    try:
        for number, layer in enumerate(image.layers, start=1):
            flat.apply_layer(layer, number=number)
    except BaseException:
        flat.close()
        raise
    return flat


def jsonable(value: Any) -> Any:
    """Dataclasses, mappings and tuples as plain JSON values (for unit inputs)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "origin"}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class UnitPlanner:
    """The units of ``spec`` over its pulled ``images``."""

    def __init__(self, spec: ImageSpec, images: Mapping[str, PulledImage], *,
                 kernel_tar: KernelTar | None, progress: Progress) -> None:
        self.spec, self.images, self.kernel_tar, self.progress = spec, images, kernel_tar, progress
        self.id_map = allocate_ids(spec)
        self._lookups: dict[str, tuple[UserLookup, GroupLookup]] = {}

    def units(self) -> list[Unit]:
        return list(self._units())

    def _units(self) -> Iterator[Unit]:
        for item in self.spec.init:
            image = self.images[item.image]
            yield Unit("init", f"init {item.image}", {"image": image.manifest_digest},
                       build=functools.partial(self._init, image))
        kernel = self.spec.kernel
        if kernel.image and kernel.tar_name and self.kernel_tar is not None:
            inits = [self.images[item.image].manifest_digest for item in self.spec.init]
            # Which of its directories an init image shadows with a symlink decides the bytes.
            yield Unit("kernel-modules", f"kernel modules {kernel.image}",
                       {"image": self.images[kernel.image].manifest_digest, "tar": kernel.tar_name, "inits": inits},
                       build=self.kernel_tar, shadowed_by_symlinks=True)
        first: dict[str, dict[str, Any]] = {}  # image ref -> the first bundle that holds its files
        for section in ("onboot", "onshutdown", "services"):
            entries: tuple[ImageEntry, ...] = getattr(self.spec, section)
            for index, entry in enumerate(entries):
                image = self.images[entry.image]
                inputs: dict[str, Any] = {
                    "section": section, "index": index, "entry": jsonable(entry),
                    "image": image.manifest_digest, "image_config": jsonable(image.container_config),
                    "ids": self.id_map, "volumes": jsonable(self.spec.volumes),
                    "earlier": first.get(entry.image),
                }
                if entry.image not in first:
                    first[entry.image] = {"section": section, "index": index, "entry": inputs["entry"]}
                yield Unit("bundle", f"{section} {entry.name}", inputs,
                           build=functools.partial(self._bundle, section, index, entry, inputs))
        for volume in self.spec.volumes:
            digest = self.images[volume.image].manifest_digest if volume.image else None
            yield Unit("volume", f"volume {volume.name}", {"volume": jsonable(volume), "image": digest},
                       build=functools.partial(self._volume, volume))

    # -- builders

    def _init(self, image: PulledImage, store: SpillStore) -> Tree:
        self.progress(f"init {image.ref}")
        flat = flatten(image, store)
        imagetar.rewrite(flat, init=True)
        return flat

    def lookups(self, image: PulledImage, flat: Tree | None = None) -> tuple[UserLookup, GroupLookup]:
        """The users and groups of an image's ``/etc/passwd`` and ``/etc/group``."""
        if image.ref not in self._lookups:
            if flat is not None:
                texts = [_text(flat, "etc/passwd"), _text(flat, "etc/group")]
            else:
                from pkgtool.sign.imagefiles import read_files

                files = read_files(image.layers, wanted=lambda p: p in ("etc/passwd", "etc/group"), image=image.ref)
                texts = [files.get(p, b"").decode("utf-8", "replace") for p in ("etc/passwd", "etc/group")]
            self._lookups[image.ref] = (passwd_lookup(texts[0]), group_lookup(texts[1]))
        return self._lookups[image.ref]

    def _config(self, entry: ImageEntry, image: PulledImage, flat: Tree | None = None) -> ContainerConfig:
        users, groups = self.lookups(image, flat)
        return build_container_config(
            entry, image_config=image.container_config, id_map=self.id_map, volumes=self.spec.volumes,
            lookup_user=users, lookup_group=groups,
        )

    def _bundle(self, section: str, index: int, entry: ImageEntry, inputs: Mapping[str, Any],
                store: SpillStore) -> Tree:
        self.progress(f"{section} {entry.name}")
        image = self.images[entry.image]
        tree = Tree(store=store)
        earlier = inputs["earlier"]
        flat = None
        if earlier is None:
            flat = flatten(image, store)
            imagetar.rewrite(flat, init=False)
        cfg = self._config(entry, image, flat)
        layout = bundle_layout(section, index, entry.name, readonly=cfg.readonly)
        lower_of_earlier = None
        if earlier is not None:
            first_entry = _entry_named(self.spec, earlier["section"], earlier["index"])
            first_cfg = self._config(first_entry, image)
            lower_of_earlier = bundle_layout(earlier["section"], earlier["index"], first_entry.name,
                                             readonly=first_cfg.readonly).lower
        if flat is not None:
            tree.overlay(flat, at=layout.lower, what=entry.image)
        tree.put(layout.path, Inode(Kind.DIR, mode=0o755))
        mountpoints = list(layout.mountpoints)
        if lower_of_earlier is not None and layout.readonly:
            mountpoints.append(layout.rootfs)
        for path in mountpoints:
            if tree.get(path) is None:
                tree.put(path, Inode(Kind.DIR, mode=0o755))
        runtime = bundle_runtime(cfg.runtime, layout, lower=lower_of_earlier)
        tree.put(f"{layout.path}/config.json", Inode(Kind.FILE, mode=0o644, content=BytesContent(bundle_json(cfg.oci))))
        tree.put(f"{layout.path}/runtime.json", Inode(Kind.FILE, mode=0o644, content=BytesContent(bundle_json(runtime))))
        return tree

    def _volume(self, volume: Any, store: SpillStore) -> Tree:
        # Volumes live at containers/volumes/NAME/merged; an image volume's files go there.
        tree = Tree(store=store)
        merged = volume.merged_dir.lstrip("/")
        if volume.image:
            tree.overlay(flatten(self.images[volume.image], store), at=merged, what=volume.image)
        else:
            tree.put(merged, Inode(Kind.DIR, mode=0o755))
        return tree


def _entry_named(spec: ImageSpec, section: str, index: int) -> ImageEntry:
    entries: tuple[ImageEntry, ...] = getattr(spec, section)
    return entries[index]


def _text(tree: Tree, path: str) -> str:
    try:
        return tree.read(path).decode("utf-8", "replace")
    except KeyError:
        return ""
