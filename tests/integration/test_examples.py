"""The example images, as committed: examples/minimal.yml boots on amd64, arm64 and s390x
and its onboot container prints the marker; examples/sshd.yml boots on amd64 and a host ssh
client logs in through a forwarded port with the key a second, merged YAML places, and runs
`uname -m`.  Pass or fail is read from the serial console (QEMU exits 0 after a panic too).

The images come from the session's published copy of the repository (tests/pkgsetkit.py),
so the pins the examples carry are the ones being tested, re-pinned there only if the
mirror moved on since they were committed.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pkgsetkit import ARCHES, MEASURE, PackageSet
from pkgsetkit import pkgtool as run_pkgtool

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UNAME = {"amd64": "x86_64", "arm64": "aarch64", "s390x": "s390x"}


def _image(pkgset: PackageSet, yamls: list[Path], arch: str, out: Path, cache: Path) -> None:
    run_pkgtool("--cache-dir", str(cache), "image", "build", *map(str, yamls), "--arch", arch, "--dir", str(out),
                cwd=pkgset.root, timeout=900)


@pytest.mark.parametrize("arch", ARCHES)
def test_minimal_boots_and_prints_its_marker(pkgset: PackageSet, arch: str, tmp_path: Path) -> None:
    from pkgtool.run.qemu import VMConfig, boot, find_media

    # One cache for every arch: an index pulled for amd64 must not hide arm64's blobs.
    cache = pkgset.root.parent / "examples-cache"
    _image(pkgset, [pkgset.root / "examples/minimal.yml"], arch, tmp_path / "out", cache)
    kernel, initrd = (tmp_path / "out" / f"minimal-{name}" for name in ("kernel", "initrd.img"))
    MEASURE["compressed_bytes"][f"minimal/{arch}/kernel+initrd"] = kernel.stat().st_size + initrd.stat().st_size
    # The VM flavour's config has CONFIG_RD_ZSTD=y, so the default initrd is zstd; its arm64
    # kernel is the gzip'd Image.  This boot is what proves both work.
    assert initrd.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert arch != "arm64" or kernel.read_bytes()[:2] == b"\x1f\x8b"
    start = time.monotonic()
    result = boot(find_media(tmp_path / "out" / "minimal"), VMConfig(arch=arch), work=tmp_path, timeout=400,
                  capture=True)
    MEASURE["boot_seconds"][f"minimal/{arch}/to-poweroff"] = round(time.monotonic() - start, 1)
    text = result.text()
    assert not result.timed_out, text[-3000:]
    lines = [line.strip() for line in text.splitlines()]
    marker = next((i for i, line in enumerate(lines) if line == f"PKGTOOL-MINIMAL-MARKER {UNAME[arch]}"), -1)
    assert marker >= 0, text[-4000:]
    assert "init: onboot 000-hello: starting" in lines[:marker], text[-3000:]
    assert "init: onboot 000-hello: exited with status 0" in lines[marker + 1:], text[-3000:]
    # The drivers of the devices present were loaded: the hostname comes from the MAC of the
    # first NIC, QEMU's virtio-net, which exists only once virtio_pci and virtio_net are in.
    assert "init: hostname pkgtool-525400123456" in lines, text[-3000:]
    assert "init: shutdown finished" in lines and "Kernel panic" not in text


def test_sshd_logs_a_host_client_in(pkgset: PackageSet, tmp_path: Path) -> None:
    from pkgtool.run.qemu import VMConfig, boot, find_media

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    key_yml = tmp_path / "key.yml"
    key_yml.write_text(f'files:\n  - path: root/.ssh/authorized_keys\n    source: {tmp_path / "id.pub"}\n    mode: "0600"\n')
    _image(pkgset, [pkgset.root / "examples/sshd.yml", key_yml], "amd64", tmp_path / "out", tmp_path / "cache")
    port = _free_port()
    vm = VMConfig(arch="amd64", networking=True, publish=((port, 22),))
    done: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: done.update(run=boot(find_media(tmp_path / "out" / "sshd"), vm,
                                                                   work=tmp_path, timeout=600, capture=True)))
    start = time.monotonic()
    thread.start()
    ssh = ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-i", str(tmp_path / "id"), "-p", str(port), "root@127.0.0.1"]
    login = None
    while thread.is_alive() and time.monotonic() - start < 400:
        login = subprocess.run([*ssh, "uname", "-m"], capture_output=True, text=True, timeout=60)
        if login.returncode == 0:
            break
        time.sleep(3)
    assert login is not None and login.returncode == 0, login.stderr if login else "the VM stopped"
    MEASURE["boot_seconds"]["sshd/amd64/to-ssh-login"] = round(time.monotonic() - start, 1)
    assert login.stdout.strip() == "x86_64"
    # Key-only: a client without the key is refused.
    stranger = subprocess.run([*ssh[:-5], "-o", "PubkeyAuthentication=no", "-p", str(port), "root@127.0.0.1", "true"],
                              capture_output=True, text=True, timeout=60)
    assert stranger.returncode != 0
    subprocess.run([*ssh, "poweroff"], capture_output=True, text=True, timeout=60)
    thread.join(timeout=300)
    text = done["run"].text()
    assert "init: service sshd: starting" in text and "init: shutdown finished" in text, text[-3000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# What `docker run --privileged` grants, spelled out: the stack's dockerd runs without
# CAP_SYS_RESOURCE in its bounding set (a sandboxed CI machine), where --privileged asks for
# every capability and fails; this grants all but that one.
PRIVILEGED_BUT_SYS_RESOURCE = {
    "cap_add": ["ALL"], "cap_drop": ["SYS_RESOURCE"], "device_cgroup_rules": ["a *:* rwm"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
}


def test_minimal_as_a_docker_image_boots_in_a_container(pkgset: PackageSet, docker_host: str, tmp_path: Path) -> None:
    """The `docker` format of examples/minimal.yml: `docker load` takes the archive and
    `docker run -t` boots the system's init in a container, which runs the onboot containers
    with its own runc (the marker) and powers off (the container exits)."""
    import docker

    name = f"pkgtool-test-{secrets.token_hex(4)}"
    run_pkgtool("--cache-dir", str(pkgset.root.parent / "examples-cache"), "image", "build",
                str(pkgset.root / "examples/minimal.yml"), "--format", "docker", "--name", name, "--dir",
                str(tmp_path / "out"), cwd=pkgset.root, timeout=900)
    client = docker.DockerClient(base_url=docker_host, timeout=300)
    loaded = client.images.load((tmp_path / "out" / f"{name}-docker.tar").read_bytes())
    try:
        assert [tag for image in loaded for tag in image.tags] == [f"{name}:latest"]
        container = client.containers.run(f"{name}:latest", detach=True, tty=True, **PRIVILEGED_BUT_SYS_RESOURCE)
        try:
            status = container.wait(timeout=240)
            logs = container.logs().decode("utf-8", "replace").replace("\r", "")
        finally:
            container.remove(force=True)
        lines = [line.strip() for line in logs.splitlines()]
        assert "PKGTOOL-MINIMAL-MARKER x86_64" in lines, logs[-3000:]
        assert "init: onboot 000-hello: exited with status 0" in lines and "init: shutdown finished" in lines
        # Powered off: the kernel ends a container's init with SIGINT when it calls reboot(2).
        assert status["StatusCode"] == 128 + 2, status
    finally:
        client.images.remove(f"{name}:latest", force=True)
