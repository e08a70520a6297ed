"""Several image YAML files as one, and rewriting the image references in one.

Files are merged in order with LinuxKit's rules (``AppendConfig`` in linuxkit's
``moby/config.go``):

* ``kernel``: each field given by a later file replaces the earlier value;
* ``init``, ``onboot``, ``onshutdown``, ``services``, ``files`` and ``volumes`` are appended;
* service names must stay unique and volume names unique and ``[a-z0-9_-]*``.

:func:`with_image` replaces one reference (for pinning), and :func:`to_data` turns a spec
back into the plain data LinuxKit's ``metadata: yaml|json`` files carry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pkgtool.errors import UsageError
from pkgtool.spec.image.model import FileEntry, ImageEntry, ImageSpec, KernelConfig
from pkgtool.spec.image.reader import KERNEL_KEYS, check_unique, parse_image_spec, warn_stderr
from pkgtool.yamlload import load_yaml


def merge_specs(base: ImageSpec, over: ImageSpec) -> ImageSpec:
    """``over`` appended to ``base`` (LinuxKit's AppendConfig): kernel fields replace, lists append."""
    k0, k1 = base.kernel, over.kernel
    kernel = KernelConfig(
        image=k1.image or k0.image,
        cmdline=k1.cmdline or k0.cmdline,
        binary=k1.binary or k0.binary,
        tar=k1.tar if k1.tar is not None else k0.tar,
        ucode=k1.ucode if k1.ucode is not None else k0.ucode,
        origin=k1.origin if k1.image else k0.origin,
    )
    merged = ImageSpec(
        kernel=kernel,
        init=base.init + over.init,
        onboot=base.onboot + over.onboot,
        onshutdown=base.onshutdown + over.onshutdown,
        services=base.services + over.services,
        files=base.files + over.files,
        volumes=base.volumes + over.volumes,
        sources=base.sources + over.sources,
    )
    check_unique(merged)
    return merged


def load_image_spec(paths: Sequence[Path], *, warn: Callable[[str], None] = warn_stderr) -> ImageSpec:
    """Load and merge image YAML files in order."""
    if not paths:
        raise UsageError("no image YAML given")
    spec = ImageSpec()
    for path in paths:
        doc = load_yaml(path)
        spec = merge_specs(spec, parse_image_spec(doc, base_dir=path.resolve().parent, warn=warn))
    return spec


def image_references(spec: ImageSpec) -> list[tuple[str, str]]:
    """Every image reference as (field path in the merged config, reference), in build order.

    Each value also carries an :class:`Origin` (file and line) for tools that rewrite the
    YAML, e.g. pinning tags to digests.
    """
    refs: list[tuple[str, str]] = []
    if spec.kernel.image:
        refs.append(("kernel.image", spec.kernel.image))
    refs.extend((f"init[{i}]", item.image) for i, item in enumerate(spec.init))
    refs.extend((f"volumes[{i}].image", v.image) for i, v in enumerate(spec.volumes) if v.image)
    for section in ("onboot", "onshutdown", "services"):
        entries: tuple[ImageEntry, ...] = getattr(spec, section)
        refs.extend((f"{section}[{i}].image", e.image) for i, e in enumerate(entries))
    return refs


def with_image(spec: ImageSpec, path: str, ref: str) -> ImageSpec:
    """A copy of ``spec`` with the reference at ``path`` (from :func:`image_references`) replaced."""
    match = re.fullmatch(r"(kernel)\.image|(init)\[(\d+)\]|(\w+)\[(\d+)\]\.image", path)
    if not match:
        raise UsageError(f"not an image reference path: {path!r}")
    if match.group(1):
        return replace(spec, kernel=replace(spec.kernel, image=ref))
    if match.group(2):
        i = int(match.group(3))
        init = list(spec.init)
        init[i] = replace(init[i], image=ref)
        return replace(spec, init=tuple(init))
    section, i = match.group(4), int(match.group(5))
    if section == "volumes":
        volumes = list(spec.volumes)
        volumes[i] = replace(volumes[i], image=ref)
        return replace(spec, volumes=tuple(volumes))
    if section not in ("onboot", "onshutdown", "services"):
        raise UsageError(f"not an image reference path: {path!r}")
    entries: list[ImageEntry] = list(getattr(spec, section))
    entries[i] = replace(entries[i], image=ref)
    if section == "onboot":
        return replace(spec, onboot=tuple(entries))
    if section == "onshutdown":
        return replace(spec, onshutdown=tuple(entries))
    return replace(spec, services=tuple(entries))


def to_data(spec: ImageSpec) -> dict[str, Any]:
    """The merged configuration as plain data, for ``files: - metadata: yaml|json``."""
    out: dict[str, Any] = {}
    k = spec.kernel
    kernel = {key: getattr(k, key) for key in KERNEL_KEYS if getattr(k, key) is not None}
    if kernel:
        out["kernel"] = kernel
    out["init"] = [i.image for i in spec.init]
    for section in ("onboot", "onshutdown", "services"):
        entries: tuple[ImageEntry, ...] = getattr(spec, section)
        out[section] = [{**e.raw, "name": e.name, "image": e.image} for e in entries]
    out["files"] = [_file_data(f) for f in spec.files]
    out["volumes"] = [
        {key: val for key, val in (("name", v.name), ("image", v.image), ("readonly", v.readonly or None),
                                    ("format", v.format), ("platforms", list(v.platforms) or None)) if val is not None}
        for v in spec.volumes
    ]
    return out


def _file_data(f: FileEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"path": f.path}
    for key in ("symlink", "contents", "source", "metadata", "uid", "gid"):
        if getattr(f, key) is not None:
            out[key] = getattr(f, key)
    if f.directory:
        out["directory"] = True
    if f.optional:
        out["optional"] = True
    if f.mode is not None:
        out["mode"] = f"{f.mode:04o}"
    return out
