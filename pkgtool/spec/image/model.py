"""The image YAML's values: frozen dataclasses, one per schema object.

Every field of an image entry that LinuxKit treats as a pointer ("unset" differs from
"empty") is ``None`` when unset, because the runtime config is built by layering the image's
``org.mobyproject.config`` label under the YAML, and an unset YAML field must let the
label's value through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LABEL = "org.mobyproject.config"
Id = int | str  # a numeric id, or a name resolved later (container name or /etc/passwd entry)


@dataclass(frozen=True)
class Origin:
    """Where a value came from: the file, its field path there and its line."""

    source: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.path}" if self.line else f"{self.source}: {self.path}"


@dataclass(frozen=True)
class IdMapping:
    host_id: int
    container_id: int
    size: int

    def to_oci(self) -> dict[str, int]:
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.size}


@dataclass(frozen=True)
class Mount:
    """An OCI mount; empty strings mean "let the runtime-config builder pick a default"."""

    destination: str = ""
    type: str = ""
    source: str = ""
    options: tuple[str, ...] | None = None
    uid_mappings: tuple[IdMapping, ...] = ()
    gid_mappings: tuple[IdMapping, ...] = ()


@dataclass(frozen=True)
class Device:
    path: str
    type: str
    major: int = 0
    minor: int = 0
    mode: str | None = None


@dataclass(frozen=True)
class Interface:
    name: str = ""
    add: str = ""
    peer: str = ""
    create_in_root: bool = False


@dataclass(frozen=True)
class BindNS:
    cgroup: str | None = None
    ipc: str | None = None
    mnt: str | None = None
    net: str | None = None
    pid: str | None = None
    user: str | None = None
    uts: str | None = None


@dataclass(frozen=True)
class Runtime:
    """Actions LinuxKit's init takes around starting a container (``runtime.json``)."""

    cgroups: tuple[str, ...] | None = None
    mounts: tuple[Mount, ...] | None = None
    mkdir: tuple[str, ...] | None = None
    interfaces: tuple[Interface, ...] | None = None
    bind_ns: BindNS = field(default_factory=BindNS)
    namespace: str | None = None


@dataclass(frozen=True)
class ImageConfig:
    """The fields valid both in an image entry and in the ``org.mobyproject.config`` label."""

    capabilities: tuple[str, ...] | None = None
    capabilities_add: tuple[str, ...] | None = None
    ambient: tuple[str, ...] | None = None
    mounts: tuple[Mount, ...] | None = None
    binds: tuple[str, ...] | None = None
    binds_add: tuple[str, ...] | None = None
    devices: tuple[Device, ...] | None = None
    tmpfs: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None
    env: tuple[str, ...] | None = None
    cwd: str | None = None
    net: str | None = None
    pid: str | None = None
    ipc: str | None = None
    uts: str | None = None
    userns: str | None = None
    hostname: str | None = None
    readonly: bool | None = None
    masked_paths: tuple[str, ...] | None = None
    readonly_paths: tuple[str, ...] | None = None
    uid: Id | None = None
    gid: Id | None = None
    additional_gids: tuple[Id, ...] | None = None
    no_new_privileges: bool | None = None
    oom_score_adj: int | None = None
    rootfs_propagation: str | None = None
    cgroups_path: str | None = None
    # Already in OCI runtime-spec JSON shape (key names as in config.json).
    resources: Mapping[str, Any] | None = None
    sysctl: Mapping[str, str] | None = None
    rlimits: tuple[str, ...] | None = None
    uid_mappings: tuple[IdMapping, ...] | None = None
    gid_mappings: tuple[IdMapping, ...] | None = None
    annotations: Mapping[str, str] | None = None
    runtime: Runtime | None = None


@dataclass(frozen=True)
class ImageEntry:
    """One ``onboot``/``onshutdown``/``services`` entry."""

    name: str
    image: str
    config: ImageConfig
    origin: Origin
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class InitImage:
    image: str
    origin: Origin


@dataclass(frozen=True)
class KernelConfig:
    image: str | None = None
    cmdline: str | None = None
    binary: str | None = None
    tar: str | None = None
    ucode: str | None = None
    origin: Origin | None = None

    @property
    def binary_name(self) -> str:
        return self.binary or "kernel"

    @property
    def tar_name(self) -> str | None:
        """The kernel tarball to unpack into ``/``, or None for ``tar: none``/``tar: ""``."""
        if self.tar is None:
            return "kernel.tar"
        return None if self.tar in ("", "none") else self.tar


@dataclass(frozen=True)
class FileEntry:
    path: str
    directory: bool = False
    symlink: str | None = None
    contents: str | None = None
    source: str | None = None
    metadata: str | None = None
    optional: bool = False
    mode: int | None = None
    uid: Id | None = None
    gid: Id | None = None
    # ``source`` paths are relative to the directory of the YAML that named them.
    base_dir: Path = Path(".")
    origin: Origin | None = None


@dataclass(frozen=True)
class Volume:
    name: str
    image: str | None = None
    readonly: bool = False
    format: str | None = None
    platforms: tuple[str, ...] = ()
    origin: Origin | None = None

    @property
    def merged_dir(self) -> str:
        return f"/containers/volumes/{self.name}/merged"


@dataclass(frozen=True)
class ImageSpec:
    kernel: KernelConfig = field(default_factory=KernelConfig)
    init: tuple[InitImage, ...] = ()
    onboot: tuple[ImageEntry, ...] = ()
    onshutdown: tuple[ImageEntry, ...] = ()
    services: tuple[ImageEntry, ...] = ()
    files: tuple[FileEntry, ...] = ()
    volumes: tuple[Volume, ...] = ()
    sources: tuple[str, ...] = ()

    def volume(self, name: str) -> Volume | None:
        return next((v for v in self.volumes if v.name == name), None)
