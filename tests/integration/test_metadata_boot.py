"""pkg/metadata at boot: `run qemu`'s cidata CD-ROM (the same ISO `--data-file` attaches) is
read by the metadata onboot container into /run/config, and a service prints a value from
there on the console.  The same user data carries bad entries: each is reported on the
console and skipped, and nothing lands outside /run/config.  One boot (amd64) for all of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pkgsetkit import PackageSet

from pkgtool.assemble.image_build import build_image
from pkgtool.oci.registry import RegistryClient
from pkgtool.run.cidata import write_cidata
from pkgtool.run.qemu import VMConfig, boot, find_media

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER_DATA = {
    "greeting": {"entries": {"message": {"content": "hello from user data"},
                             "secret": {"perm": "0600", "content": "s3cret"}}},
    "hostname": {"content": "configured-by-metadata"},
    # bad: a path out of /run/config (LinuxKit's own package would write /run/escaped), an
    # absolute one, a nested one, both content and entries, set-id bits
    "..": {"entries": {"escaped": {"content": "x"}}},
    "/etc": {"entries": {"passwd": {"content": "x"}}},
    "a/b": {"content": "x"},
    "both": {"content": "x", "entries": {}},
    "setuid": {"perm": "4755", "content": "x"},
}
READER = (
    'echo "CONFIG-VALUE $(cat /run/config/greeting/message)"; '
    'echo "CONFIG-HOSTNAME $(hostname)"; '
    'echo "CONFIG-SECRET-MODE $(stat -c %a /run/config/greeting/secret)"; '
    'echo "CONFIG-TREE $(cd /run/config && find . | sort | tr "\\n" " ")"; '
    'if [ -e /run/escaped ]; then echo CONFIG-ESCAPED; else echo CONFIG-CONTAINED; fi; '
    "echo CONFIG-DONE"
)  # a service's own output goes to /var/log/reader.log: this one writes to the console


def _yaml(pkgset: PackageSet, kernel: str) -> str:
    p = pkgset.pinned
    return f"""kernel:
  image: {kernel}
  cmdline: "console=ttyS0 panic=-1"
init:
  - {p('init')}
  - {p('runc')}
onboot:
  - name: metadata
    image: {p('metadata')}
services:
  - name: reader
    image: {p('getty')}
    binds: ["/run:/run:ro", "/dev/console:/dev/console"]
    command: ["/bin/sh", "-c", {json.dumps('{ ' + READER + '; } >/dev/console 2>&1')}]
"""


def test_user_data_reaches_a_service_and_bad_entries_are_skipped(pkgset: PackageSet, registry: str,
                                                                 tmp_path: Path) -> None:
    yml = tmp_path / "metadata.yml"
    yml.write_text(_yaml(pkgset, pkgset.kernel_ref))
    build_image([yml], formats=["kernel+initrd"], arch="amd64", out_dir=tmp_path / "out", cache=tmp_path / "cache",
                registry_client_factory=lambda: RegistryClient(registry))
    cdrom = write_cidata(json.dumps(USER_DATA).encode(), tmp_path / "data.iso")
    result = boot(find_media(tmp_path / "out" / "metadata"), VMConfig(arch="amd64", cdrom=cdrom, networking=False),
                  work=tmp_path, timeout=300, capture=True, stop_marker=b"CONFIG-DONE")
    text = result.text()
    lines = [line.strip() for line in text.splitlines()]
    assert "CONFIG-DONE" in lines, text[-4000:]
    assert "metadata: user data from /dev/sr0 (label cidata, /user-data)" in lines
    assert "CONFIG-VALUE hello from user data" in lines
    assert "CONFIG-HOSTNAME configured-by-metadata" in lines and "metadata: hostname configured-by-metadata" in lines
    assert "CONFIG-SECRET-MODE 600" in lines
    tree = next(line for line in lines if line.startswith("CONFIG-TREE")).split()[1:]
    assert tree == [".", "./greeting", "./greeting/message", "./greeting/secret", "./hostname", "./provider",
                    "./userdata"], tree
    assert "CONFIG-CONTAINED" in lines
    for entry, why in (('".."', "is not a plain file name"), ('"/etc"', "is not a plain file name"),
                       ('"a/b"', "is not a plain file name"), ('"both"', "has both content and entries"),
                       ('"setuid"', 'perm "4755" is not octal permission bits')):
        assert f"metadata: ignored entry {entry}: {why}" in lines, text[-4000:]
    assert "init: onboot 000-metadata: exited with status 0" in lines
