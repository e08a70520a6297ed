"""Reading one image YAML document into the model, with errors that point at file:line.

Unknown keys are errors naming ``file:line`` and the field path; ``trust:`` is accepted and
ignored with a warning (LinuxKit dropped content trust).  ``@pkg:`` templates are not
expanded here; such strings are kept verbatim.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pkgtool.errors import UsageError
from pkgtool.spec.image.model import (
    LABEL,
    BindNS,
    Device,
    FileEntry,
    IdMapping,
    ImageConfig,
    ImageEntry,
    ImageSpec,
    InitImage,
    Interface,
    KernelConfig,
    Mount,
    Origin,
    Runtime,
    Volume,
)
from pkgtool.yamlload import PathKey, YamlDoc, format_path, parse_yaml

_VOLUME_NAME_RE = re.compile(r"^[a-z0-9_-]*$")


# --------------------------------------------------------------------------- schema

_TOP_KEYS = ("kernel", "init", "onboot", "onshutdown", "services", "trust", "files", "volumes")
KERNEL_KEYS = ("image", "cmdline", "binary", "tar", "ucode")
_FILE_KEYS = ("path", "directory", "symlink", "contents", "source", "metadata", "optional", "mode", "uid", "gid")
_VOLUME_KEYS = ("name", "image", "readonly", "format", "platforms")
_TRUST_KEYS = ("image", "org")
_MOUNT_KEYS = ("destination", "type", "source", "options", "uidmappings", "gidmappings")
_DEVICE_KEYS = ("path", "type", "major", "minor", "mode")
_IDMAP_KEYS = ("hostID", "containerID", "size")
_INTERFACE_KEYS = ("name", "add", "peer", "createInRoot")
_NAMESPACE_KEYS = ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")
_RUNTIME_KEYS = ("cgroups", "mounts", "mkdir", "interfaces", "bindNS", "namespace")

# YAML key -> (dataclass attribute, kind).  The kinds are parsed by DocReader.value().
ENTRY_FIELDS: dict[str, tuple[str, str]] = {
    "capabilities": ("capabilities", "strings"),
    "capabilities.add": ("capabilities_add", "strings"),
    "ambient": ("ambient", "strings"),
    "mounts": ("mounts", "mounts"),
    "binds": ("binds", "strings"),
    "binds.add": ("binds_add", "strings"),
    "devices": ("devices", "devices"),
    "tmpfs": ("tmpfs", "strings"),
    "command": ("command", "strings"),
    "env": ("env", "strings"),
    "cwd": ("cwd", "string"),
    "net": ("net", "string"),
    "pid": ("pid", "string"),
    "ipc": ("ipc", "string"),
    "uts": ("uts", "string"),
    "userns": ("userns", "string"),
    "hostname": ("hostname", "string"),
    "readonly": ("readonly", "bool"),
    "maskedPaths": ("masked_paths", "strings"),
    "readonlyPaths": ("readonly_paths", "strings"),
    "uid": ("uid", "id"),
    "gid": ("gid", "id"),
    "additionalGids": ("additional_gids", "ids"),
    "noNewPrivileges": ("no_new_privileges", "bool"),
    "oomScoreAdj": ("oom_score_adj", "int"),
    "rootfsPropagation": ("rootfs_propagation", "string"),
    "cgroupsPath": ("cgroups_path", "string"),
    "resources": ("resources", "resources"),
    "sysctl": ("sysctl", "mapstring"),
    "rlimits": ("rlimits", "strings"),
    "uidMappings": ("uid_mappings", "idmappings"),
    "gidMappings": ("gid_mappings", "idmappings"),
    "annotations": ("annotations", "mapstring"),
    "runtime": ("runtime", "runtime"),
}

# The cgroup resources block, as LinuxKit's JSON schema allows it.  Values: a nested schema,
# ("list", schema) for arrays of objects, or a scalar kind.  ``rename`` maps LinuxKit's
# spelling to the OCI runtime-spec key (Go's JSON decoding is case-insensitive, so LinuxKit
# accepts ``blockio`` for the spec's ``blockIO``).
_THROTTLE = {"major": "int", "minor": "int", "rate": "int"}
_RESOURCES_SCHEMA: dict[str, Any] = {
    "devices": ("list", {"allow": "bool", "type": "string", "major": "int", "minor": "int", "access": "string"}),
    "memory": {
        "limit": "int", "reservation": "int", "swap": "int", "kernel": "int", "kernelTCP": "int",
        "swappiness": "int", "disableOOMKiller": "bool",
    },
    "cpu": {
        "shares": "int", "quota": "int", "period": "int", "realtimeRuntime": "int",
        "realtimePeriod": "int", "cpus": "string", "mems": "string",
    },
    "pids": {"limit": "int"},
    "blockio": {
        "weight": "int", "leafWeight": "int",
        "weightDevice": ("list", {"major": "int", "minor": "int", "weight": "int", "leafWeight": "int"}),
        "throttleReadBpsDevice": ("list", _THROTTLE),
        "throttleWriteBpsDevice": ("list", _THROTTLE),
        "throttleReadIOPSDevice": ("list", _THROTTLE),
        "throttleWriteIOPSDevice": ("list", _THROTTLE),
    },
    "hugepageLimits": ("list", {"pageSize": "intstr", "limit": "int"}),
    "network": {"classID": "int", "priorities": ("list", {"name": "string", "priority": "int"})},
}
_RESOURCE_RENAME = {"blockio": "blockIO", "blockIO": "blockIO"}


def warn_stderr(message: str) -> None:
    sys.stderr.write(f"pkgtool: warning: {message}\n")


class DocReader:
    """Typed accessors over one parsed document, raising errors that point at file:line."""

    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc

    def origin(self, path: PathKey) -> Origin:
        probe = tuple(path)
        while probe not in self.doc.lines and probe:
            probe = probe[:-1]
        return Origin(self.doc.source, format_path(path), self.doc.lines.get(probe, 0))

    def mapping(self, path: PathKey, value: Any, allowed: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.doc.error(path, f"expected a mapping, got {kind_of(value)}")
        for key in value:
            if key not in allowed:
                raise self.doc.error((*path, key), f"unknown key (allowed: {', '.join(allowed)})")
        return value

    def value(self, path: PathKey, value: Any, kind: str) -> Any:
        if kind == "string":
            if not isinstance(value, str):
                raise self.doc.error(path, f"expected a string, got {kind_of(value)}")
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.doc.error(path, f"expected true or false, got {kind_of(value)}")
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.doc.error(path, f"expected an integer, got {kind_of(value)}")
            return value
        if kind == "intstr":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise self.doc.error(path, f"expected an integer or a string, got {kind_of(value)}")
            return value
        if kind == "id":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise self.doc.error(path, f"expected a number or a name, got {kind_of(value)}")
            if isinstance(value, int) and not 0 <= value < 2**32:
                raise self.doc.error(path, "id out of range")
            return value
        if kind == "ids":
            return tuple(self.value((*path, i), v, "id") for i, v in enumerate(self.list(path, value)))
        if kind == "strings":
            return tuple(self.value((*path, i), v, "string") for i, v in enumerate(self.list(path, value)))
        if kind == "mapstring":
            if not isinstance(value, dict):
                raise self.doc.error(path, f"expected a mapping, got {kind_of(value)}")
            return {k: self.value((*path, k), v, "string") for k, v in value.items()}
        if kind == "mounts":
            return tuple(self.mount((*path, i), v) for i, v in enumerate(self.list(path, value)))
        if kind == "devices":
            return tuple(self.device((*path, i), v) for i, v in enumerate(self.list(path, value)))
        if kind == "idmappings":
            return tuple(self.idmapping((*path, i), v) for i, v in enumerate(self.list(path, value)))
        if kind == "resources":
            checked = self.schema(path, value, _RESOURCES_SCHEMA)
            return {_RESOURCE_RENAME.get(k, k): v for k, v in checked.items()}
        if kind == "runtime":
            return self.runtime(path, value)
        raise AssertionError(kind)

    def list(self, path: PathKey, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise self.doc.error(path, f"expected a list, got {kind_of(value)}")
        return value

    def schema(self, path: PathKey, value: Any, schema: Mapping[str, Any]) -> dict[str, Any]:
        allowed = list(schema) + (["blockIO"] if "blockio" in schema else [])
        data = self.mapping(path, value, allowed)
        out: dict[str, Any] = {}
        for key, item in data.items():
            sub = schema["blockio" if key == "blockIO" else key]
            here = (*path, key)
            if isinstance(sub, dict):
                out[key] = self.schema(here, item, sub)
            elif isinstance(sub, tuple):
                out[key] = [self.schema((*here, i), v, sub[1]) for i, v in enumerate(self.list(here, item))]
            else:
                out[key] = self.value(here, item, sub)
        return out

    def opt(self, data: Mapping[str, Any], path: PathKey, key: str, kind: str) -> Any:
        return self.value((*path, key), data[key], kind) if key in data else None

    def mount(self, path: PathKey, value: Any) -> Mount:
        data = self.mapping(path, value, _MOUNT_KEYS)
        return Mount(
            destination=self.opt(data, path, "destination", "string") or "",
            type=self.opt(data, path, "type", "string") or "",
            source=self.opt(data, path, "source", "string") or "",
            options=self.opt(data, path, "options", "strings"),
            uid_mappings=self.opt(data, path, "uidmappings", "idmappings") or (),
            gid_mappings=self.opt(data, path, "gidmappings", "idmappings") or (),
        )

    def device(self, path: PathKey, value: Any) -> Device:
        data = self.mapping(path, value, _DEVICE_KEYS)
        for key in ("path", "type"):
            if key not in data:
                raise self.doc.error(path, f"device needs {key!r}")
        mode = data.get("mode")
        if isinstance(mode, int) and not isinstance(mode, bool):
            # An unquoted 0666 is an octal int to YAML 1.1 but a decimal one to some
            # writers; insist on a string so that "0666" always means what it says.
            raise self.doc.error((*path, "mode"), 'quote the mode as an octal string, e.g. "0666"')
        return Device(
            path=self.value((*path, "path"), data["path"], "string"),
            type=self.value((*path, "type"), data["type"], "string"),
            major=self.opt(data, path, "major", "int") or 0,
            minor=self.opt(data, path, "minor", "int") or 0,
            mode=self.opt(data, path, "mode", "string"),
        )

    def idmapping(self, path: PathKey, value: Any) -> IdMapping:
        data = self.mapping(path, value, _IDMAP_KEYS)
        return IdMapping(
            host_id=self.opt(data, path, "hostID", "int") or 0,
            container_id=self.opt(data, path, "containerID", "int") or 0,
            size=self.opt(data, path, "size", "int") or 0,
        )

    def runtime(self, path: PathKey, value: Any) -> Runtime:
        data = self.mapping(path, value, _RUNTIME_KEYS)
        interfaces = None
        if "interfaces" in data:
            here = (*path, "interfaces")
            interfaces = tuple(self.interface((*here, i), v) for i, v in enumerate(self.list(here, data["interfaces"])))
        bind_ns = BindNS()
        if "bindNS" in data:
            here = (*path, "bindNS")
            ns = self.mapping(here, data["bindNS"], _NAMESPACE_KEYS)
            bind_ns = BindNS(**{k: self.value((*here, k), v, "string") for k, v in ns.items()})
        return Runtime(
            cgroups=self.opt(data, path, "cgroups", "strings"),
            mounts=self.opt(data, path, "mounts", "mounts"),
            mkdir=self.opt(data, path, "mkdir", "strings"),
            interfaces=interfaces,
            bind_ns=bind_ns,
            namespace=self.opt(data, path, "namespace", "string"),
        )

    def interface(self, path: PathKey, value: Any) -> Interface:
        data = self.mapping(path, value, _INTERFACE_KEYS)
        return Interface(
            name=self.opt(data, path, "name", "string") or "",
            add=self.opt(data, path, "add", "string") or "",
            peer=self.opt(data, path, "peer", "string") or "",
            create_in_root=bool(self.opt(data, path, "createInRoot", "bool")),
        )

    def image_config(self, path: PathKey, data: Mapping[str, Any]) -> ImageConfig:
        values = {}
        for key, item in data.items():
            if key in ("name", "image"):
                continue
            attr, kind = ENTRY_FIELDS[key]
            values[attr] = self.value((*path, key), item, kind)
        return ImageConfig(**values)

    def image_entry(self, path: PathKey, value: Any) -> ImageEntry:
        data = self.mapping(path, value, ("name", "image", *ENTRY_FIELDS))
        for key in ("name", "image"):
            if key not in data:
                raise self.doc.error(path, f"image entry needs {key!r}")
        name = self.value((*path, "name"), data["name"], "string")
        if not name or "/" in name or name in (".", ".."):
            raise self.doc.error((*path, "name"), f"invalid container name {name!r}")
        image = self.value((*path, "image"), data["image"], "string")
        if not image:
            raise self.doc.error((*path, "image"), "empty image reference")
        return ImageEntry(name, image, self.image_config(path, data), self.origin((*path, "image")), raw=data)

    def file_entry(self, path: PathKey, value: Any, base_dir: Path) -> FileEntry:
        data = self.mapping(path, value, _FILE_KEYS)
        if not data.get("path"):
            raise self.doc.error(path, "file entry needs a non-empty 'path'")
        mode = None
        if "mode" in data:
            text = self.value((*path, "mode"), data["mode"], "string")
            try:
                mode = int(text, 8)
            except ValueError:
                raise self.doc.error((*path, "mode"), f"not an octal mode: {text!r}") from None
            if not 0 <= mode <= 0o7777:
                raise self.doc.error((*path, "mode"), f"mode out of range: {text!r}")
        entry = FileEntry(
            path=self.value((*path, "path"), data["path"], "string"),
            directory=bool(self.opt(data, path, "directory", "bool")),
            symlink=self.opt(data, path, "symlink", "string") or None,
            contents=self.opt(data, path, "contents", "string"),
            source=self.opt(data, path, "source", "string") or None,
            metadata=self.opt(data, path, "metadata", "string") or None,
            optional=bool(self.opt(data, path, "optional", "bool")),
            mode=mode,
            uid=self.opt(data, path, "uid", "id"),
            gid=self.opt(data, path, "gid", "id"),
            base_dir=base_dir,
            origin=self.origin(path),
        )
        # The same consistency rules LinuxKit applies at build time, reported at load time.
        kinds = [k for k in ("contents", "source", "metadata") if getattr(entry, k) is not None]
        if entry.directory and (kinds or entry.symlink):
            raise self.doc.error(path, "a directory cannot have contents, source, metadata or symlink")
        if entry.symlink and kinds:
            raise self.doc.error(path, "a symlink cannot have contents, source or metadata")
        if len(kinds) > 1:
            raise self.doc.error(path, f"specify only one of {' and '.join(kinds)}")
        if not entry.directory and not entry.symlink and not kinds:
            raise self.doc.error(path, "contents of file not specified (contents, source, metadata, symlink or directory)")
        if entry.metadata not in (None, "yaml", "json"):
            raise self.doc.error((*path, "metadata"), f"unsupported metadata type {entry.metadata!r} (yaml or json)")
        return entry

    def volume(self, path: PathKey, value: Any) -> Volume:
        data = self.mapping(path, value, _VOLUME_KEYS)
        name = self.opt(data, path, "name", "string")
        if not name or not _VOLUME_NAME_RE.match(name):
            raise self.doc.error((*path, "name"), f"invalid volume name {name!r}: use [a-z0-9_-]")
        fmt = self.opt(data, path, "format", "string")
        if fmt not in (None, "oci", "filesystem"):
            raise self.doc.error((*path, "format"), f"unknown volume format {fmt!r} (oci or filesystem)")
        return Volume(
            name=name,
            image=self.opt(data, path, "image", "string") or None,
            readonly=bool(self.opt(data, path, "readonly", "bool")),
            format=fmt,
            platforms=self.opt(data, path, "platforms", "strings") or (),
            origin=self.origin(path),
        )


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )


# --------------------------------------------------------------------------- loading

def parse_image_spec(
    doc: YamlDoc, *, base_dir: Path, warn: Callable[[str], None] = warn_stderr
) -> ImageSpec:
    """Validate one parsed image YAML; ``base_dir`` anchors relative ``files:`` sources."""
    r = DocReader(doc)
    data = {} if doc.data is None else r.mapping((), doc.data, _TOP_KEYS)
    kernel = KernelConfig()
    if "kernel" in data:
        k = r.mapping(("kernel",), data["kernel"], KERNEL_KEYS)
        kernel = KernelConfig(
            **{key: r.value(("kernel", key), k[key], "string") for key in KERNEL_KEYS if key in k},
            origin=r.origin(("kernel", "image")) if "image" in k else None,
        )
    if "trust" in data:
        r.mapping(("trust",), data["trust"], _TRUST_KEYS)
        warn(f"{doc.where(('trust',))}: 'trust' is ignored (content trust is not supported; pin images by digest and verify signatures instead)")
    init: list[InitImage] = []
    if "init" in data:
        for i, item in enumerate(r.list(("init",), data["init"])):
            ref = r.value(("init", i), item, "string")
            if not ref:
                raise doc.error(("init", i), "empty image reference")
            init.append(InitImage(ref, r.origin(("init", i))))
    sections: dict[str, tuple[ImageEntry, ...]] = {}
    for section in ("onboot", "onshutdown", "services"):
        items = r.list((section,), data[section]) if data.get(section) is not None else []
        sections[section] = tuple(r.image_entry((section, i), v) for i, v in enumerate(items))
    files = data.get("files") or []
    volumes = data.get("volumes") or []
    spec = ImageSpec(
        kernel=kernel,
        init=tuple(init),
        onboot=sections["onboot"],
        onshutdown=sections["onshutdown"],
        services=sections["services"],
        files=tuple(r.file_entry(("files", i), v, base_dir) for i, v in enumerate(r.list(("files",), files))),
        volumes=tuple(r.volume(("volumes", i), v) for i, v in enumerate(r.list(("volumes",), volumes))),
        sources=(doc.source,),
    )
    check_unique(spec)
    return spec


def check_unique(spec: ImageSpec) -> None:
    seen: dict[str, ImageEntry] = {}
    for entry in spec.services:
        if entry.name in seen:
            raise UsageError(f"{entry.origin}: duplicate service name {entry.name!r} (first at {seen[entry.name].origin})")
        seen[entry.name] = entry
    vols: dict[str, Volume] = {}
    for vol in spec.volumes:
        if vol.name in vols:
            raise UsageError(f"{vol.origin}: duplicate volume name {vol.name!r} (first at {vols[vol.name].origin})")
        vols[vol.name] = vol



def parse_label(text: str, *, image: str) -> ImageConfig:
    """The ``org.mobyproject.config`` label of ``image`` (JSON, a YAML subset) as defaults."""
    doc = parse_yaml(text, f"{image}: label {LABEL}")
    r = DocReader(doc)
    if not isinstance(doc.data, dict):
        raise UsageError(f"{image}: label {LABEL} must be a JSON object")
    for key in ("name", "image"):
        if key in doc.data:
            raise doc.error((key,), "cannot be set in the image label")
    return r.image_config((), r.mapping((), doc.data, tuple(ENTRY_FIELDS)))


# --------------------------------------------------------------------------- references
