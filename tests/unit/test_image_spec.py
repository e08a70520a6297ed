"""Image YAML: schema, file:line errors, LinuxKit's merge rules, references."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pkgtool.errors import UsageError
from pkgtool.spec.image import (
    ImageSpec,
    Mount,
    image_references,
    load_image_spec,
    parse_image_spec,
    parse_label,
    to_data,
    with_image,
)
from pkgtool.yamlload import parse_yaml

BASE = """\
kernel:
  image: linuxkit/kernel:6.6
  cmdline: "console=ttyS0"
init:
  - linuxkit/init:abc
  - linuxkit/runc:def
onboot:
  - name: sysctl
    image: linuxkit/sysctl:1
    capabilities: [CAP_SYS_ADMIN]
    binds.add: ["/etc/x:/etc/x"]
    readonly: true
    uid: 100
    gid: dhcpcd
    additionalGids: [1, wheel]
    oomScoreAdj: -500
    sysctl: {net.ipv4.ip_forward: "1"}
    resources:
      memory: {limit: 1000}
      blockio: {weight: 10}
    mounts:
      - type: cgroup
        options: [ro]
    devices:
      - {path: /dev/console, type: c, major: 5, minor: 1, mode: "0666"}
    runtime:
      mkdir: [/var/lib/x]
      bindNS: {net: /run/netns/x}
      interfaces:
        - {name: wg0, add: wireguard, createInRoot: true}
services:
  - name: getty
    image: linuxkit/getty:2
    env: [INSECURE=true]
files:
  - path: etc/motd
    contents: hello
    mode: "0644"
  - path: etc/dir
    directory: true
volumes:
  - name: vol_a
    readonly: true
"""


def _spec(text: str, source: str = "a.yml", warn: list[str] | None = None) -> ImageSpec:
    sink = warn if warn is not None else []
    return parse_image_spec(parse_yaml(text, source), base_dir=Path("/base"), warn=sink.append)


def test_full_schema_parses_to_typed_values() -> None:
    spec = _spec(BASE)
    assert spec.kernel.image == "linuxkit/kernel:6.6" and spec.kernel.cmdline == "console=ttyS0"
    assert spec.kernel.tar_name == "kernel.tar" and spec.kernel.binary_name == "kernel"
    assert [i.image for i in spec.init] == ["linuxkit/init:abc", "linuxkit/runc:def"]
    sysctl = spec.onboot[0]
    cfg = sysctl.config
    assert cfg.capabilities == ("CAP_SYS_ADMIN",) and cfg.binds_add == ("/etc/x:/etc/x",)
    assert cfg.binds is None  # unset stays distinguishable from empty
    assert cfg.readonly is True and cfg.uid == 100 and cfg.gid == "dhcpcd"
    assert cfg.additional_gids == (1, "wheel") and cfg.oom_score_adj == -500
    assert cfg.sysctl == {"net.ipv4.ip_forward": "1"}
    assert cfg.resources == {"memory": {"limit": 1000}, "blockIO": {"weight": 10}}
    assert cfg.mounts == (Mount(type="cgroup", options=("ro",)),)
    assert cfg.devices is not None and cfg.devices[0].mode == "0666"
    assert cfg.runtime is not None and cfg.runtime.mkdir == ("/var/lib/x",)
    assert cfg.runtime.bind_ns.net == "/run/netns/x"
    assert cfg.runtime.interfaces is not None and cfg.runtime.interfaces[0].create_in_root
    assert sysctl.origin.source == "a.yml" and sysctl.origin.line == 9
    assert spec.services[0].config.env == ("INSECURE=true",)
    motd = spec.files[0]
    assert motd.mode == 0o644 and motd.contents == "hello" and motd.base_dir == Path("/base")
    assert spec.files[1].directory
    assert spec.volumes[0].readonly and spec.volumes[0].merged_dir == "/containers/volumes/vol_a/merged"


@pytest.mark.parametrize(
    ("text", "where", "field"),
    [
        ("kernel:\n  image: k\n  cmdlin: x\n", "a.yml:3", "kernel.cmdlin"),
        ("init: []\nservice:\n  - {}\n", "a.yml:2", "service"),
        ("onboot:\n  - name: a\n    image: b\n    capabilites: [x]\n", "a.yml:4", "onboot[0].capabilites"),
        ("onboot:\n  - name: a\n    image: b\n    resources:\n      memory:\n        limt: 1\n", "a.yml:6", "onboot[0].resources.memory.limt"),
        ("onboot:\n  - name: a\n    image: b\n    runtime:\n      bindNS: {nett: x}\n", "a.yml:5", "onboot[0].runtime.bindNS.nett"),
        ("files:\n  - path: a\n    contents: b\n    owner: 1\n", "a.yml:4", "files[0].owner"),
        ("volumes:\n  - name: v\n    size: 1\n", "a.yml:3", "volumes[0].size"),
    ],
)
def test_unknown_keys_name_file_line_and_field(text: str, where: str, field: str) -> None:
    with pytest.raises(UsageError) as err:
        _spec(text)
    assert str(err.value).startswith(f"{where}: {field}: unknown key")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("onboot:\n  - name: a\n    image: b\n    readonly: yes-please\n", "a.yml:4: onboot[0].readonly: expected true or false"),
        ("onboot:\n  - name: a\n    image: b\n    oomScoreAdj: '5'\n", "a.yml:4: onboot[0].oomScoreAdj: expected an integer"),
        ("onboot:\n  - name: a\n", "a.yml:2: onboot[0]: image entry needs 'image'"),
        ("onboot:\n  - name: a/b\n    image: x\n", "a.yml:2: onboot[0].name: invalid container name"),
        ("files:\n  - path: a\n", "a.yml:2: files[0]: contents of file not specified"),
        ("files:\n  - path: a\n    contents: x\n    source: y\n", "a.yml:2: files[0]: specify only one of contents and source"),
        ("files:\n  - path: a\n    contents: x\n    mode: '0x9'\n", "a.yml:4: files[0].mode: not an octal mode"),
        ("files:\n  - path: a\n    directory: true\n    contents: x\n", "a.yml:2: files[0]: a directory cannot"),
        ("volumes:\n  - name: Bad\n", "a.yml:2: volumes[0].name: invalid volume name"),
        ("onboot:\n  - name: a\n    image: b\n    devices: [{path: /dev/x, type: c, mode: 0666}]\n", "quote the mode"),
    ],
)
def test_bad_values_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _spec(text)


def test_trust_is_accepted_with_a_warning() -> None:
    warnings: list[str] = []
    spec = _spec("trust:\n  org: [linuxkit]\ninit: [a]\n", warn=warnings)
    assert [i.image for i in spec.init] == ["a"]
    assert len(warnings) == 1 and "a.yml:1" in warnings[0] and "trust" in warnings[0]


def test_trust_warning_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.yml"
    path.write_text("trust:\n  image: [x]\n")
    load_image_spec([path])
    assert "warning" in capsys.readouterr().err


def test_trust_with_unknown_key_is_still_an_error() -> None:
    with pytest.raises(UsageError, match=r"a.yml:2: trust.people: unknown key"):
        _spec("trust:\n  people: [x]\n")


def test_merge_follows_linuxkit(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(BASE)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text(
        textwrap.dedent(
            """\
            kernel:
              cmdline: "console=ttyAMA0"
              tar: none
            init: [extra/init:1]
            onboot:
              - {name: second, image: x/y:1}
            services:
              - {name: sshd, image: x/sshd:1}
            files:
              - {path: etc/b, source: b.txt}
            volumes:
              - {name: vol_b}
            """
        )
    )
    spec = load_image_spec([tmp_path / "a.yml", tmp_path / "sub" / "b.yml"])
    assert spec.kernel.image == "linuxkit/kernel:6.6"  # not given again: kept
    assert spec.kernel.cmdline == "console=ttyAMA0"  # replaced
    assert spec.kernel.tar_name is None  # tar: none
    assert [i.image for i in spec.init] == ["linuxkit/init:abc", "linuxkit/runc:def", "extra/init:1"]
    assert [e.name for e in spec.onboot] == ["sysctl", "second"]
    assert [e.name for e in spec.services] == ["getty", "sshd"]
    assert [f.path for f in spec.files] == ["etc/motd", "etc/dir", "etc/b"]
    assert spec.files[2].base_dir == tmp_path / "sub"  # sources stay relative to their own YAML
    assert [v.name for v in spec.volumes] == ["vol_a", "vol_b"]
    assert spec.sources == (str(tmp_path / "a.yml"), str(tmp_path / "sub" / "b.yml"))


def test_merge_rejects_duplicate_services_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text("services:\n  - {name: s, image: a}\n")
    (tmp_path / "b.yml").write_text("\n\nservices:\n  - {name: s, image: b}\n")
    with pytest.raises(UsageError, match=r"b.yml:4: services\[0\].image: duplicate service name 's'"):
        load_image_spec([tmp_path / "a.yml", tmp_path / "b.yml"])


def test_missing_file_and_empty_list(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="file not found"):
        load_image_spec([tmp_path / "nope.yml"])
    with pytest.raises(UsageError, match="no image YAML"):
        load_image_spec([])


def test_image_references_and_rewrite() -> None:
    spec = _spec(BASE + "  - name: vol_img\n    image: alpine:3\n")
    refs = image_references(spec)
    assert refs == [
        ("kernel.image", "linuxkit/kernel:6.6"),
        ("init[0]", "linuxkit/init:abc"),
        ("init[1]", "linuxkit/runc:def"),
        ("volumes[1].image", "alpine:3"),
        ("onboot[0].image", "linuxkit/sysctl:1"),
        ("services[0].image", "linuxkit/getty:2"),
    ]
    pinned = "linuxkit/getty:2@sha256:" + "a" * 64
    spec2 = with_image(with_image(spec, "services[0].image", pinned), "init[1]", "r@sha256:" + "b" * 64)
    assert spec2.services[0].image == pinned and spec2.init[1].image.startswith("r@")
    assert with_image(spec, "kernel.image", "k2").kernel.image == "k2"
    with pytest.raises(UsageError):
        with_image(spec, "files[0].image", "x")


def test_label_parsing() -> None:
    label = parse_label('{"capabilities": ["CAP_NET_ADMIN"], "binds": ["/a:/a"], "net": "new"}', image="x/y:1")
    assert label.capabilities == ("CAP_NET_ADMIN",) and label.binds == ("/a:/a",) and label.net == "new"
    with pytest.raises(UsageError, match="cannot be set in the image label"):
        parse_label('{"name": "x"}', image="x/y:1")
    with pytest.raises(UsageError, match=r"x/y:1: label org\.mobyproject\.config"):
        parse_label('{"bogus": 1}', image="x/y:1")


def test_to_data_round_trips_through_the_parser() -> None:
    spec = _spec(BASE)
    import yaml

    again = _spec(yaml.safe_dump(to_data(spec)))
    assert again.onboot[0].config == spec.onboot[0].config
    assert again.files[0].mode == 0o644 and again.kernel.cmdline == spec.kernel.cmdline
