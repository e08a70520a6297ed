"""OCI runtime ``config.json`` and LinuxKit ``runtime.json`` for one container.

Values are layered lowest first: the image config (``Env``, ``Entrypoint``+``Cmd``,
``WorkingDir``, ``User``) < the image's ``org.mobyproject.config`` label < the YAML entry,
with LinuxKit's semantics (``ConfigToOCI`` in linuxkit's ``moby/config.go``):

* default mounts ``/proc``, ``/dev`` (tmpfs), ``/dev/pts``, ``/sys``, ``/sys/fs/cgroup``
  (read-only); LinuxKit deliberately omits ``/dev/shm`` and ``/dev/mqueue``, and so do we;
  ``tmpfs``, ``binds`` and ``mounts`` replace mounts at the same destination; the list is
  sorted by destination so that ``/dev`` precedes ``/dev/pts``;
* ``binds`` replaces label binds, ``binds.add`` adds to them; likewise ``capabilities`` and
  ``capabilities.add``; a lone ``all``/``none`` means every/no capability;
* ``net``, ``ipc``, ``uts`` and ``userns`` default to the host namespace, ``pid`` to a new one;
  ``new`` (and ``none`` for net) means a new namespace, a path joins an existing one; a new
  mount namespace is always created;
* uid/gid names resolve to the ids LinuxKit allocates per container name (100, 101, … in
  onboot, onshutdown, services order), then to the image's ``/etc/passwd``/``/etc/group``.

Two deliberate differences from LinuxKit: capability names may omit the ``CAP_`` prefix and
any case is accepted; and the image config's ``User`` is honoured (as Docker does) when
neither the label nor the YAML sets ``uid``/``gid`` (LinuxKit ignores it and runs as root).

Determinism: :func:`canonical_json` writes sorted keys with a 4-space indent and no trailing
newline.  LinuxKit writes Go struct order; runtimes only parse the JSON, so the order is
free, and sorted keys are an order anyone can reproduce without Go's struct definitions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pkgtool.assemble.ids import GroupLookup, IdResolver, UserLookup
from pkgtool.errors import UsageError
from pkgtool.spec.image import (
    LABEL,
    Device,
    ImageConfig,
    ImageEntry,
    Mount,
    Runtime,
    Volume,
    parse_label,
)

OCI_VERSION = "1.0.2"  # what runc 1.1 (Debian bookworm) implements
UINT64_MAX = 2**64 - 1

# The capabilities LinuxKit knows (moby/sys/capability.ListKnown()), in kernel order.
ALL_CAPABILITIES: tuple[str, ...] = tuple(
    "CAP_" + name
    for name in (
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
        "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
        "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
        "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
        "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
        "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
    )
)
_KNOWN_CAPS = frozenset(ALL_CAPABILITIES)

_RLIMITS = frozenset(
    "RLIMIT_" + n
    for n in (
        "CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS", "LOCKS",
        "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME",
    )
)

# mount type -> default destination when a `mounts:` entry omits it
_DEFAULT_MOUNTPOINT = {"proc": "/proc", "devpts": "/dev/pts", "sysfs": "/sys", "cgroup": "/sys/fs/cgroup", "mqueue": "/dev/mqueue"}



@dataclass(frozen=True)
class ContainerConfig:
    """The two JSON documents of a bundle, as plain data."""

    oci: dict[str, Any]
    runtime: dict[str, Any]

    @property
    def readonly(self) -> bool:
        return bool(self.oci["root"].get("readonly"))


@dataclass(frozen=True)
class BundleLayout:
    """Where a container's pieces live in the image (paths relative to ``/``, no slashes around)."""

    path: str  # containers/onboot/000-name
    readonly: bool

    @property
    def rootfs(self) -> str:
        return f"{self.path}/rootfs"

    @property
    def lower(self) -> str:
        """Where the image's files go: ``rootfs`` itself, or the overlay's lower dir."""
        return self.rootfs if self.readonly else f"{self.path}/lower"

    @property
    def mountpoints(self) -> tuple[str, ...]:
        """Empty directories the bundle needs besides the files (overlay scratch and target)."""
        return () if self.readonly else (f"{self.path}/tmp", self.rootfs)


def bundle_layout(section: str, index: int, name: str, *, readonly: bool) -> BundleLayout:
    """LinuxKit's layout: ``containers/{onboot,onshutdown}/NNN-name`` and ``containers/services/name``."""
    if section not in ("onboot", "onshutdown", "services"):
        raise ValueError(section)
    leaf = name if section == "services" else f"{index:03d}-{name}"
    return BundleLayout(f"containers/{section}/{leaf}", readonly)


# --------------------------------------------------------------------------- helpers

def _pick(*values: Any) -> Any:
    """The last value that is set (not None): later layers override earlier ones."""
    out = None
    for value in values:
        if value is not None:
            out = value
    return out


def _pick_nonempty(*values: str | None) -> str:
    """Like :func:`_pick` but an empty string also counts as unset (LinuxKit's string fields)."""
    out = ""
    for value in values:
        if value:
            out = value
    return out


def _merge_unique(base: Sequence[str] | None, extra: Sequence[str] | None) -> tuple[str, ...] | None:
    if base is None and extra is None:
        return None
    return tuple(dict.fromkeys([*(base or ()), *(extra or ())]))


class _Errors:
    def __init__(self, entry: ImageEntry) -> None:
        self.entry = entry

    def __call__(self, message: str) -> UsageError:
        return UsageError(f"{self.entry.origin}: container {self.entry.name!r}: {message}")


def _normalise_caps(names: Iterable[str], fail: _Errors) -> list[str]:
    names = list(names)
    if len(names) == 1 and names[0].lower() == "all":
        return list(ALL_CAPABILITIES)
    if len(names) == 1 and names[0].lower() == "none":
        return []
    out: list[str] = []
    for name in names:
        cap = name.strip().upper()
        if not cap.startswith("CAP_"):
            cap = "CAP_" + cap
        if cap not in _KNOWN_CAPS:
            raise fail(f"unknown capability {name!r}")
        if cap not in out:
            out.append(cap)
    return out


def _rlimit(text: str, fail: _Errors) -> dict[str, Any]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise fail(f"cannot parse rlimit {text!r}: expected name,soft,hard")
    kind = parts[0].upper()
    if not kind.startswith("RLIMIT_"):
        kind = "RLIMIT_" + kind
    if kind not in _RLIMITS:
        raise fail(f"unknown rlimit {parts[0]!r}")

    def value(v: str) -> int:
        if v.lower() == "unlimited":
            return UINT64_MAX
        if not v.isdigit() or int(v) > UINT64_MAX:
            raise fail(f"cannot parse rlimit value {v!r} in {text!r}")
        return int(v)

    return {"type": kind, "soft": value(parts[1]), "hard": value(parts[2])}


def _mount_json(m: Mount) -> dict[str, Any]:
    out: dict[str, Any] = {"destination": m.destination}
    if m.type:
        out["type"] = m.type
    if m.source:
        out["source"] = m.source
    if m.options:
        out["options"] = list(m.options)
    if m.uid_mappings:
        out["uidMappings"] = [x.to_oci() for x in m.uid_mappings]
    if m.gid_mappings:
        out["gidMappings"] = [x.to_oci() for x in m.gid_mappings]
    return out


def _mounts(label: ImageConfig, yaml: ImageConfig, readonly: bool, fail: _Errors) -> list[dict[str, Any]]:
    dev_opts = ["nosuid", "strictatime", "mode=755", "size=65536k"] + (["ro"] if readonly else [])
    sys_opts = ["nosuid", "noexec", "nodev"] + (["ro"] if readonly else [])
    mounts: dict[str, Mount] = {
        "/proc": Mount("/proc", "proc", "proc", ("nosuid", "nodev", "noexec", "relatime")),
        "/dev": Mount("/dev", "tmpfs", "tmpfs", tuple(dev_opts)),
        "/dev/pts": Mount("/dev/pts", "devpts", "devpts", ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")),
        "/sys": Mount("/sys", "sysfs", "sysfs", tuple(sys_opts)),
        "/sys/fs/cgroup": Mount("/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "noexec", "nodev", "relatime", "ro")),
    }
    for t in _pick(label.tmpfs, yaml.tmpfs) or ():
        parts = t.split(":")
        if len(parts) > 2:
            raise fail(f"cannot parse tmpfs {t!r}: too many ':'")
        opts = tuple(parts[1].split(",")) if len(parts) == 2 else None
        mounts[parts[0]] = Mount(parts[0], "tmpfs", "tmpfs", opts)
    for b in _pick(_merge_unique(label.binds, yaml.binds_add), yaml.binds) or ():
        parts = b.split(":")
        if len(parts) < 2:
            raise fail(f"cannot parse bind {b!r}: missing ':'")
        if len(parts) > 3:
            raise fail(f"cannot parse bind {b!r}: too many ':'")
        # LinuxKit's default for a bind without options is rw + rshared.
        opts = (*parts[2].split(","), "rbind") if len(parts) == 3 else ("rw", "rbind", "rshared")
        mounts[parts[1]] = Mount(parts[1], "bind", parts[0], opts)
    for m in _pick(label.mounts, yaml.mounts) or ():
        kind = m.type
        if not kind and m.source in ("mqueue", "devpts", "proc", "sysfs", "cgroup"):
            kind = m.source
        if not kind and m.destination == "/dev":
            kind = "tmpfs"
        if not kind:
            raise fail(f"mount for destination {m.destination!r} is missing its type")
        dest = m.destination or _DEFAULT_MOUNTPOINT.get(kind, "")
        if not dest:
            raise fail(f"mount of type {kind!r} is missing its destination")
        mounts[dest] = replace(m, destination=dest, type=kind, source=m.source or kind)
    # Sort by destination so that a parent is mounted before what is mounted inside it.
    return [_mount_json(mounts[d]) for d in sorted(mounts, key=lambda d: d.encode("utf-8"))]


def _namespaces(label: ImageConfig, yaml: ImageConfig) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def add(kind: str, value: str, new_words: tuple[str, ...]) -> None:
        if value in ("host", "root"):
            return
        ns = {"type": kind}
        if value and value not in new_words:
            ns["path"] = value
        out.append(ns)

    add("network", _pick_nonempty("root", label.net, yaml.net), ("new", "none"))
    add("ipc", _pick_nonempty("root", label.ipc, yaml.ipc), ("new",))
    add("uts", _pick_nonempty("root", label.uts, yaml.uts), ("new",))
    add("pid", _pick_nonempty(label.pid, yaml.pid), ("new",))  # default: a new pid namespace
    add("user", _pick_nonempty("root", label.userns, yaml.userns), ("new",))
    out.append({"type": "mount"})
    return out



def _devices(devices: Sequence[Device], resources: dict[str, Any], fail: _Errors) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cgroup = list(resources.get("devices", []))
    for d in devices:
        if d.path == "all":
            # A whole class of devices, allowed in the device cgroup only.
            cgroup.append({"allow": True, "type": d.type, "access": "rwm"})
            continue
        dev: dict[str, Any] = {"path": d.path, "type": d.type, "major": d.major, "minor": d.minor}
        if d.mode is not None:
            try:
                dev["fileMode"] = int(d.mode, 8)
            except ValueError:
                raise fail(f"device {d.path}: cannot parse mode {d.mode!r} as octal") from None
        out.append(dev)
        cgroup.append({"allow": True, "type": d.type, "major": d.major, "minor": d.minor, "access": "rwm"})
    if cgroup:
        resources["devices"] = cgroup
    return out


def _runtime_json(label: Runtime | None, yaml: Runtime | None) -> dict[str, Any]:
    lo, hi = label or Runtime(), yaml or Runtime()

    def interface(i: Any) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in (("name", i.name), ("add", i.add), ("peer", i.peer)) if v}
        out["createInRoot"] = i.create_in_root
        return out

    return {
        "cgroups": list(_pick(lo.cgroups, hi.cgroups) or ()),
        "mounts": [_mount_json(m) for m in _pick(lo.mounts, hi.mounts) or ()],
        "mkdir": list(_pick(lo.mkdir, hi.mkdir) or ()),
        "interfaces": [interface(i) for i in _pick(lo.interfaces, hi.interfaces) or ()],
        "bindNS": {k: _pick(getattr(lo.bind_ns, k), getattr(hi.bind_ns, k)) or "" for k in ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")},
        "namespace": _pick(lo.namespace, hi.namespace) or "",
    }


def resolve_volumes(entry: ImageEntry, volumes: Sequence[Volume]) -> ImageEntry:
    """Bind and mount sources naming a volume (no leading ``/``) become its merged directory."""
    fail = _Errors(entry)
    by_name = {v.name: v for v in volumes}

    def volume(name: str) -> Volume:
        if name not in by_name:
            raise fail(f"volume {name!r} is not defined in volumes:")
        return by_name[name]

    def bind(text: str) -> str:
        parts = text.split(":")
        if parts[0].startswith("/"):
            return text
        vol = volume(parts[0])
        if vol.readonly and (len(parts) < 3 or "ro" not in parts[2].split(",")):
            raise fail(f"volume {vol.name!r} is read-only: bind it with ':ro'")
        return ":".join([vol.merged_dir, *parts[1:]])

    cfg = entry.config
    mounts = cfg.mounts
    if mounts is not None:
        new = []
        for m in mounts:
            if m.type == "bind" and not m.source.startswith("/"):
                vol = volume(m.source)
                opts = m.options or ()
                if vol.readonly and "ro" not in opts:
                    raise fail(f"volume {vol.name!r} is read-only: mount it with option 'ro'")
                m = replace(m, source=vol.merged_dir)
            new.append(m)
        mounts = tuple(new)
    return replace(
        entry,
        config=replace(
            cfg,
            mounts=mounts,
            binds=None if cfg.binds is None else tuple(bind(b) for b in cfg.binds),
            binds_add=None if cfg.binds_add is None else tuple(bind(b) for b in cfg.binds_add),
        ),
    )


# --------------------------------------------------------------------------- the builder

def build_container_config(
    entry: ImageEntry,
    *,
    image_config: Mapping[str, Any],
    id_map: Mapping[str, int] | None = None,
    volumes: Sequence[Volume] = (),
    lookup_user: UserLookup | None = None,
    lookup_group: GroupLookup | None = None,
) -> ContainerConfig:
    """``config.json`` and ``runtime.json`` for ``entry``.

    ``image_config`` is the ``config`` object of the OCI image configuration (``Env``,
    ``Cmd``, ``Entrypoint``, ``WorkingDir``, ``User``, ``Labels``).
    """
    fail = _Errors(entry)
    entry = resolve_volumes(entry, volumes)
    yaml = entry.config
    labels = image_config.get("Labels") or {}
    label_text = labels.get(LABEL, "") if isinstance(labels, dict) else ""
    label = parse_label(label_text, image=entry.image) if label_text else ImageConfig()
    ids = IdResolver(id_map or {}, users=lookup_user, groups=lookup_group, fail=fail)

    image_args = [*(image_config.get("Entrypoint") or ()), *(image_config.get("Cmd") or ())]
    args = _pick(image_args or None, label.command, yaml.command)
    env = _pick(image_config.get("Env") or None, label.env, yaml.env)
    cwd = _pick_nonempty("/", image_config.get("WorkingDir"), label.cwd, yaml.cwd)
    readonly = bool(_pick(label.readonly, yaml.readonly))

    caps = _normalise_caps(_pick(_merge_unique(label.capabilities, yaml.capabilities_add), yaml.capabilities) or (), fail)
    ambient = _normalise_caps(_pick(label.ambient, yaml.ambient) or (), fail)
    bounding = sorted(set(caps) | set(ambient))
    capabilities = {
        k: v for k, v in (("bounding", bounding), ("effective", caps), ("inheritable", bounding),
                          ("permitted", bounding), ("ambient", ambient)) if v
    }

    uid_v, gid_v = _pick(label.uid, yaml.uid), _pick(label.gid, yaml.gid)
    if uid_v is None and gid_v is None and image_config.get("User"):
        uid, gid = ids.image_user(str(image_config["User"]))
    else:
        uid, gid = ids.uid(uid_v if uid_v is not None else 0), ids.gid(gid_v if gid_v is not None else 0)
    user: dict[str, Any] = {"uid": uid, "gid": gid}
    extra_gids = [ids.gid(g) for g in _pick(label.additional_gids, yaml.additional_gids) or ()]
    if extra_gids:
        user["additionalGids"] = extra_gids

    process: dict[str, Any] = {"user": user, "cwd": cwd, "capabilities": capabilities}
    if args:
        process["args"] = list(args)
    if env:
        process["env"] = list(env)
    rlimits = [_rlimit(r, fail) for r in _pick(label.rlimits, yaml.rlimits) or ()]
    if rlimits:
        process["rlimits"] = rlimits
    if _pick(label.no_new_privileges, yaml.no_new_privileges):
        process["noNewPrivileges"] = True
    oom = _pick(label.oom_score_adj, yaml.oom_score_adj)
    if oom is not None:
        process["oomScoreAdj"] = oom

    resources = json.loads(json.dumps(_pick(label.resources, yaml.resources) or {}))
    devices = _devices(_pick(label.devices, yaml.devices) or (), resources, fail)
    linux: dict[str, Any] = {"namespaces": _namespaces(label, yaml), "resources": resources}
    optional_linux = (
        ("uidMappings", [m.to_oci() for m in _pick(label.uid_mappings, yaml.uid_mappings) or ()]),
        ("gidMappings", [m.to_oci() for m in _pick(label.gid_mappings, yaml.gid_mappings) or ()]),
        ("sysctl", dict(_pick(label.sysctl, yaml.sysctl) or {})),
        ("cgroupsPath", _pick(label.cgroups_path, yaml.cgroups_path) or ""),
        ("devices", devices),
        ("rootfsPropagation", _pick(label.rootfs_propagation, yaml.rootfs_propagation) or ""),
        ("maskedPaths", list(_pick(label.masked_paths, yaml.masked_paths) or ())),
        ("readonlyPaths", list(_pick(label.readonly_paths, yaml.readonly_paths) or ())),
    )
    linux.update({k: v for k, v in optional_linux if v})

    oci: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": "rootfs", **({"readonly": True} if readonly else {})},
        "mounts": _mounts(label, yaml, readonly, fail),
        "linux": linux,
    }
    hostname = _pick_nonempty(label.hostname, yaml.hostname)
    if hostname:
        oci["hostname"] = hostname
    annotations = dict(_pick(label.annotations, yaml.annotations) or {})
    if annotations:
        oci["annotations"] = annotations
    return ContainerConfig(oci=oci, runtime=_runtime_json(label.runtime, yaml.runtime))


def bundle_runtime(runtime: Mapping[str, Any], layout: BundleLayout, *, lower: str | None = None) -> dict[str, Any]:
    """``runtime.json`` with the mounts that make ``rootfs`` (prepended, as LinuxKit does).

    Read-only: ``rootfs`` is bind-mounted onto itself (runc wants a mount point), or from
    ``lower`` when another bundle already holds the same image's files.  Writable: a tmpfs
    on ``tmp`` and an overlay of ``lower`` with upper/work dirs in it, mounted on ``rootfs``.
    """
    lower_dir = lower or layout.lower
    if layout.readonly:
        rootfs_mounts: list[dict[str, Any]] = [
            {"source": "/" + lower_dir, "destination": "/" + layout.rootfs, "options": ["bind"]}
        ]
    else:
        tmp = f"{layout.path}/tmp"
        rootfs_mounts = [
            {"source": "tmpfs", "type": "tmpfs", "destination": "/" + tmp},
            # Private, so nothing else sees the container's scratch layers.
            {"destination": "/" + tmp, "options": ["remount", "private"]},
            {
                "source": "overlay",
                "type": "overlay",
                "destination": "/" + layout.rootfs,
                "options": [f"lowerdir=/{lower_dir}", f"upperdir=/{tmp}/upper", f"workdir=/{tmp}/work"],
            },
        ]
    out = dict(runtime)
    out["mounts"] = [*rootfs_mounts, *runtime.get("mounts", [])]
    return out
