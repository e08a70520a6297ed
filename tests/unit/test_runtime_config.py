"""config.json / runtime.json generation: LinuxKit's layering and the image-entry field set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pkgtool.assemble.ids import IdResolver, allocate_ids, group_lookup, passwd_lookup
from pkgtool.assemble.runtime_config import (
    ALL_CAPABILITIES,
    UINT64_MAX,
    build_container_config,
    bundle_layout,
    bundle_runtime,
)
from pkgtool.errors import UsageError
from pkgtool.jsonio import bundle_json
from pkgtool.spec.image import ImageEntry, ImageSpec, parse_image_spec
from pkgtool.yamlload import parse_yaml


def _entry(yaml_fields: str = "", volumes: str = "") -> tuple[ImageEntry, ImageSpec]:
    text = "onboot:\n  - name: c\n    image: example/c:1\n"
    text += "".join(f"    {line}\n" for line in yaml_fields.splitlines())
    text += volumes
    spec = parse_image_spec(parse_yaml(text, "t.yml"), base_dir=Path("."))
    return spec.onboot[0], spec


def _build(yaml_fields: str = "", image: dict[str, Any] | None = None, label: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    entry, spec = _entry(yaml_fields)
    config = dict(image or {})
    if label is not None:
        config["Labels"] = {"org.mobyproject.config": json.dumps(label)}
    kw.setdefault("volumes", spec.volumes)
    return build_container_config(entry, image_config=config, **kw).oci


def test_defaults() -> None:
    oci = _build()
    assert oci["ociVersion"] == "1.0.2"
    assert oci["root"] == {"path": "rootfs"}
    assert oci["process"] == {"user": {"uid": 0, "gid": 0}, "cwd": "/", "capabilities": {}}
    assert [m["destination"] for m in oci["mounts"]] == ["/dev", "/dev/pts", "/proc", "/sys", "/sys/fs/cgroup"]
    dev = oci["mounts"][0]
    assert dev == {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
    assert oci["linux"] == {"namespaces": [{"type": "pid"}, {"type": "mount"}], "resources": {}}
    assert "hostname" not in oci and "annotations" not in oci


def test_image_config_then_label_then_yaml() -> None:
    image = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["PATH=/bin"], "WorkingDir": "/work"}
    oci = _build(image=image)
    assert oci["process"]["args"] == ["/bin/sh", "-c", "echo hi"]
    assert oci["process"]["env"] == ["PATH=/bin"] and oci["process"]["cwd"] == "/work"
    oci = _build(image=image, label={"command": ["/label"], "cwd": "/label"})
    assert oci["process"]["args"] == ["/label"] and oci["process"]["cwd"] == "/label"
    assert oci["process"]["env"] == ["PATH=/bin"]
    oci = _build("command: [/yaml]\nenv: [A=1]\ncwd: /y", image=image, label={"command": ["/label"], "cwd": "/label"})
    assert oci["process"]["args"] == ["/yaml"] and oci["process"]["env"] == ["A=1"] and oci["process"]["cwd"] == "/y"
    # An explicitly empty YAML list overrides (LinuxKit's pointer semantics).
    assert "env" not in _build("env: []", image=image)["process"]


def test_capabilities_replace_add_all_none_and_prefixless() -> None:
    label = {"capabilities": ["CAP_SYS_CHROOT"]}
    caps = _build("capabilities: [CAP_SYS_ADMIN]", label=label)["process"]["capabilities"]
    assert caps == {k: ["CAP_SYS_ADMIN"] for k in ("bounding", "effective", "inheritable", "permitted")}
    caps = _build("capabilities.add: [net_admin, CAP_SYS_CHROOT]", label=label)["process"]["capabilities"]
    assert caps["effective"] == ["CAP_SYS_CHROOT", "CAP_NET_ADMIN"]
    assert caps["bounding"] == ["CAP_NET_ADMIN", "CAP_SYS_CHROOT"]
    assert _build("capabilities: [all]")["process"]["capabilities"]["effective"] == list(ALL_CAPABILITIES)
    assert _build("capabilities: [none]", label=label)["process"]["capabilities"] == {}
    caps = _build("capabilities: [CAP_CHOWN]\nambient: [CAP_NET_RAW]")["process"]["capabilities"]
    assert caps["ambient"] == ["CAP_NET_RAW"] and caps["effective"] == ["CAP_CHOWN"]
    assert caps["bounding"] == ["CAP_CHOWN", "CAP_NET_RAW"]
    with pytest.raises(UsageError, match=r"t.yml:3: onboot\[0\].image: container 'c': unknown capability 'CAP_FLY'"):
        _build("capabilities: [CAP_FLY]")


def test_namespaces() -> None:
    def ns(fields: str, label: dict[str, Any] | None = None) -> list[dict[str, str]]:
        return list(_build(fields, label=label)["linux"]["namespaces"])

    assert ns("pid: host") == [{"type": "mount"}]
    assert ns("net: new\nipc: new\nuts: new\nuserns: new\npid: new") == [
        {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "pid"}, {"type": "user"}, {"type": "mount"},
    ]
    assert ns("net: none\npid: root")[0] == {"type": "network"}
    assert ns("net: /run/netns/wg")[0] == {"type": "network", "path": "/run/netns/wg"}
    assert ns("", label={"net": "new"})[0] == {"type": "network"}
    assert ns("net: host", label={"net": "new"}) == [{"type": "pid"}, {"type": "mount"}]


def test_readonly_rootfs_and_dev_sys_options() -> None:
    oci = _build("readonly: true")
    assert oci["root"] == {"path": "rootfs", "readonly": True}
    mounts = {m["destination"]: m for m in oci["mounts"]}
    assert mounts["/dev"]["options"][-1] == "ro" and mounts["/sys"]["options"][-1] == "ro"
    assert _build("readonly: false", label={"readonly": True})["root"] == {"path": "rootfs"}


def test_binds_replace_add_and_options() -> None:
    label = {"binds": ["/lib/modules:/lib/modules"]}
    mounts = {m["destination"]: m for m in _build("binds.add: ['/var:/var:rshared,rbind']", label=label)["mounts"]}
    assert mounts["/lib/modules"] == {"destination": "/lib/modules", "type": "bind", "source": "/lib/modules", "options": ["rw", "rbind", "rshared"]}
    assert mounts["/var"]["options"] == ["rshared", "rbind", "rbind"]
    mounts = {m["destination"]: m for m in _build("binds: ['/etc:/hostetc:ro']", label=label)["mounts"]}
    assert "/lib/modules" not in mounts and mounts["/hostetc"]["options"] == ["ro", "rbind"]
    with pytest.raises(UsageError, match="missing ':'"):
        _build("binds: [/nocolon]")
    with pytest.raises(UsageError, match="too many ':'"):
        _build("binds: ['/a:/b:ro:x']")


def test_tmpfs_and_mounts_replace_defaults_sorted() -> None:
    oci = _build("tmpfs: ['/run:rw,size=1m', /tmp]\nmounts:\n  - {type: cgroup, options: [rw]}\n  - {source: proc, destination: /proc}\n  - {destination: /dev, options: [x]}")
    mounts = {m["destination"]: m for m in oci["mounts"]}
    assert mounts["/run"] == {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["rw", "size=1m"]}
    assert mounts["/tmp"] == {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
    assert mounts["/sys/fs/cgroup"] == {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["rw"]}
    assert mounts["/proc"] == {"destination": "/proc", "type": "proc", "source": "proc"}
    assert mounts["/dev"]["type"] == "tmpfs" and mounts["/dev"]["options"] == ["x"]
    dests = [m["destination"] for m in oci["mounts"]]
    assert dests == sorted(dests)
    with pytest.raises(UsageError, match="missing its type"):
        _build("mounts: [{destination: /x}]")
    with pytest.raises(UsageError, match="missing its destination"):
        _build("mounts: [{type: tmpfs}]")


def test_devices_and_device_cgroup() -> None:
    oci = _build("devices:\n  - {path: /dev/console, type: c, major: 5, minor: 1, mode: '0666'}\n  - {path: all, type: b}\nresources: {devices: [{allow: false, access: rwm}]}")
    assert oci["linux"]["devices"] == [{"path": "/dev/console", "type": "c", "major": 5, "minor": 1, "fileMode": 0o666}]
    assert oci["linux"]["resources"]["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
        {"allow": True, "type": "b", "access": "rwm"},
    ]
    with pytest.raises(UsageError, match="octal"):
        _build("devices: [{path: /dev/x, type: c, mode: '99'}]")


def test_rlimits() -> None:
    oci = _build("rlimits: ['nofile,1024,2048', 'RLIMIT_CORE, unlimited, unlimited']")
    assert oci["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048},
        {"type": "RLIMIT_CORE", "soft": UINT64_MAX, "hard": UINT64_MAX},
    ]
    for bad, message in (("nofile,1", "name,soft,hard"), ("bogus,1,2", "unknown rlimit"), ("nofile,x,2", "cannot parse")):
        with pytest.raises(UsageError, match=message):
            _build(f"rlimits: ['{bad}']")


def test_scalar_and_map_fields() -> None:
    oci = _build(
        "hostname: box\nnoNewPrivileges: true\noomScoreAdj: -999\nrootfsPropagation: shared\n"
        "cgroupsPath: /podruntime/c\nsysctl: {net.core.somaxconn: '1024'}\nmaskedPaths: [/proc/kcore]\n"
        "readonlyPaths: [/proc/sys]\nannotations: {a: b}\nresources: {memory: {limit: 100}, blockio: {weight: 5}}\n"
        "uidMappings: [{hostID: 1000, containerID: 0, size: 1}]"
    )
    assert oci["hostname"] == "box" and oci["annotations"] == {"a": "b"}
    assert oci["process"]["noNewPrivileges"] is True and oci["process"]["oomScoreAdj"] == -999
    linux = oci["linux"]
    assert linux["rootfsPropagation"] == "shared" and linux["cgroupsPath"] == "/podruntime/c"
    assert linux["sysctl"] == {"net.core.somaxconn": "1024"}
    assert linux["maskedPaths"] == ["/proc/kcore"] and linux["readonlyPaths"] == ["/proc/sys"]
    assert linux["resources"] == {"memory": {"limit": 100}, "blockIO": {"weight": 5}}
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 1}]
    assert "oomScoreAdj" in _build("oomScoreAdj: 0")["process"]  # zero is a value, not "unset"


def test_uid_gid_resolution() -> None:
    spec = parse_image_spec(
        parse_yaml("onboot:\n  - {name: a, image: x}\nservices:\n  - {name: b, image: y}\n  - {name: c, image: z}\n", "t.yml"),
        base_dir=Path("."),
    )
    ids = allocate_ids(spec)
    assert ids == {"a": 100, "b": 101, "c": 102}
    users = passwd_lookup("root:x:0:0::/root:/bin/sh\nsshd:x:104:65534::/run/sshd:/usr/sbin/nologin\n")
    groups = group_lookup("root:x:0:\nwheel:x:10:root\n")
    kw = {"id_map": ids, "lookup_user": users, "lookup_group": groups}
    assert _build("uid: b\ngid: 7", **kw)["process"]["user"] == {"uid": 101, "gid": 7}
    assert _build("uid: sshd\ngid: wheel\nadditionalGids: [c, 3, root]", **kw)["process"]["user"] == {
        "uid": 104, "gid": 10, "additionalGids": [102, 3, 0]}
    assert _build("", label={"uid": "root", "gid": 5}, **kw)["process"]["user"] == {"uid": 0, "gid": 5}
    with pytest.raises(UsageError, match="cannot find user 'nobody'"):
        _build("uid: nobody", **kw)


def test_image_user_is_honoured_when_nothing_else_sets_ids() -> None:
    users = passwd_lookup("sshd:x:104:65534::/run/sshd:/usr/sbin/nologin\n")
    groups = group_lookup("adm:x:4:\n")
    assert _build(image={"User": "sshd"}, lookup_user=users)["process"]["user"] == {"uid": 104, "gid": 65534}
    assert _build(image={"User": "1000:adm"}, lookup_group=groups)["process"]["user"] == {"uid": 1000, "gid": 4}
    assert _build("uid: 0", image={"User": "sshd"}, lookup_user=users)["process"]["user"] == {"uid": 0, "gid": 0}
    with pytest.raises(UsageError, match="image USER"):
        _build(image={"User": "ghost"})


def test_volume_binds_resolve_to_merged_dirs() -> None:
    volumes = "volumes:\n  - {name: data}\n  - {name: ro_vol, readonly: true}\n"
    entry, spec = _entry("binds: ['data:/data', 'ro_vol:/ro:ro']\nmounts: [{type: bind, source: data, destination: /m}]", volumes)
    oci = build_container_config(entry, image_config={}, volumes=spec.volumes).oci
    mounts = {m["destination"]: m for m in oci["mounts"]}
    assert mounts["/data"]["source"] == "/containers/volumes/data/merged"
    assert mounts["/ro"]["source"] == "/containers/volumes/ro_vol/merged"
    assert mounts["/m"]["source"] == "/containers/volumes/data/merged"
    entry, spec = _entry("binds: ['ro_vol:/ro']", volumes)
    with pytest.raises(UsageError, match="read-only"):
        build_container_config(entry, image_config={}, volumes=spec.volumes)
    entry, spec = _entry("binds: ['nosuch:/x']", volumes)
    with pytest.raises(UsageError, match="not defined"):
        build_container_config(entry, image_config={}, volumes=spec.volumes)


def test_runtime_json_and_bundle_mounts() -> None:
    entry, _ = _entry("runtime:\n  mkdir: [/var/x]\n  cgroups: [podruntime]\n  interfaces: [{name: eth1, peer: veth1}]\n  bindNS: {net: /run/netns/x}\n  namespace: svc\n  mounts: [{type: tmpfs, destination: /run/x}]")
    label = {"runtime": {"mkdir": ["/label"], "cgroups": ["fromlabel"]}}
    cfg = build_container_config(entry, image_config={"Labels": {"org.mobyproject.config": json.dumps(label)}})
    assert cfg.runtime == {
        "cgroups": ["podruntime"],
        "mounts": [{"destination": "/run/x", "type": "tmpfs"}],
        "mkdir": ["/var/x"],
        "interfaces": [{"name": "eth1", "peer": "veth1", "createInRoot": False}],
        "bindNS": {"cgroup": "", "ipc": "", "mnt": "", "net": "/run/netns/x", "pid": "", "user": "", "uts": ""},
        "namespace": "svc",
    }
    assert build_container_config(_entry()[0], image_config={}).runtime["mkdir"] == []

    ro = bundle_layout("onboot", 3, "dhcpcd", readonly=True)
    assert ro.path == "containers/onboot/003-dhcpcd" and ro.lower == ro.rootfs and ro.mountpoints == ()
    mounts = bundle_runtime(cfg.runtime, ro)["mounts"]
    assert mounts[0] == {"source": "/containers/onboot/003-dhcpcd/rootfs", "destination": "/containers/onboot/003-dhcpcd/rootfs", "options": ["bind"]}
    assert mounts[1] == {"destination": "/run/x", "type": "tmpfs"}

    rw = bundle_layout("services", 0, "sshd", readonly=False)
    assert rw.path == "containers/services/sshd" and rw.lower == "containers/services/sshd/lower"
    assert rw.mountpoints == ("containers/services/sshd/tmp", "containers/services/sshd/rootfs")
    mounts = bundle_runtime({"mounts": []}, rw)["mounts"]
    assert mounts[2]["options"] == [
        "lowerdir=/containers/services/sshd/lower",
        "upperdir=/containers/services/sshd/tmp/upper",
        "workdir=/containers/services/sshd/tmp/work",
    ]


def test_bundle_json_is_stable() -> None:
    oci = _build("capabilities: [all]\nsysctl: {b: '1', a: '2'}")
    text = bundle_json(oci)
    assert text == bundle_json(json.loads(text))
    assert text.index(b'"a"') < text.index(b'"b"') and not text.endswith(b"\n")


def test_id_resolver_without_an_image_takes_numbers_root_and_container_names_only() -> None:
    ids = IdResolver({"sshd": 101}, fail=lambda message: UsageError(f"files: {message}"))
    assert [ids.uid(7), ids.uid("7"), ids.uid("root"), ids.uid(""), ids.uid("sshd"), ids.gid("sshd")] == [7, 7, 0, 0, 101, 101]
    with pytest.raises(UsageError, match=r"^files: cannot resolve user 'nobody' \(not a number or a container name\)$"):
        ids.uid("nobody")
