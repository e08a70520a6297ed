"""examples/docker.yml end to end, through the real CLI: `pkgtool run qemu` boots it on amd64
with a new 2 GiB qcow2 data disk (--disk), the daemon's settings on a cidata CD-ROM
(--data-file: an insecure-registry entry for the stack's registry, which the guest reaches at
10.0.2.2) and everything kept in one --state directory; the host's docker client then runs
`info` and `run` of an image this test pushed to the local registry.

One boot serves the daemon, the pull and run, where the daemon listens (only eth0's address;
not reachable from a container) and what the VM's network does; a second boot of the same
disk finds the image still there, with the disk left as it was.  Each VM powers off through
the daemon itself: a privileged container in the VM's PID namespace signals init.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import imagekit
import pytest
from pkgsetkit import MEASURE, PackageSet
from pkgsetkit import pkgtool as run_pkgtool

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GUEST_PORT = 2375
HOST_IN_GUEST = "10.0.2.2"  # QEMU user networking: the host's loopback, as the VM sees it
BOOT_TIMEOUT = 300.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class VM:
    """One `pkgtool run qemu` of the docker example, and the host's docker client for it."""

    def __init__(self, prefix: Path, state: Path, data: Path) -> None:
        self.port = _free_port()
        self.state = state
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pkgtool", "run", "qemu", str(prefix), "--state", str(state),
             "--disk", "docker.qcow2,size=2G", "--data-file", str(data), "--publish", f"{self.port}:{GUEST_PORT}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.started = time.monotonic()

    def docker(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "--host", f"tcp://127.0.0.1:{self.port}", *args], capture_output=True,
                              text=True, timeout=timeout)

    def ok(self, *args: str, timeout: float = 180) -> str:
        proc = self.docker(*args, timeout=timeout)
        assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr[-2000:]}\n{self.console()[-3000:]}"
        return proc.stdout

    def wait_for_info(self) -> tuple[str, float]:
        """`docker info` once it answers, and the seconds since QEMU started."""
        while time.monotonic() - self.started < BOOT_TIMEOUT and self.proc.poll() is None:
            info = self.docker("info", timeout=30)
            if info.returncode == 0:
                return info.stdout, time.monotonic() - self.started
            time.sleep(0.25)
        raise AssertionError(f"no `docker info` within {BOOT_TIMEOUT:g} s:\n{self.console()[-4000:]}")

    def console(self) -> str:
        log = self.state / "console.log"
        return log.read_text(errors="replace").replace("\r", "") if log.exists() else ""

    def power_off(self, image: str) -> None:
        # USR2 is busybox init's power-off: rcK stops dockerd (this container's daemon), then
        # the VM powers off, so the docker client may lose its daemon midway: no check here.
        self.docker("run", "--rm", "--privileged", "--pid", "host", image, "kill", "-USR2", "1", timeout=120)
        try:
            self.proc.wait(timeout=120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.returncode == 0, self.proc.stderr.read().decode() if self.proc.stderr else ""


@pytest.fixture(scope="module")
def docker_example(pkgset: PackageSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docker-example")
    run_pkgtool("--cache-dir", str(pkgset.root.parent / "examples-cache"), "image", "build",
                str(pkgset.root / "examples/docker.yml"), "--arch", "amd64", "--dir", str(out), cwd=pkgset.root,
                timeout=900)
    return out / "docker"


def test_docker_in_a_vm_runs_a_local_image_and_keeps_it_on_its_disk(
        docker_example: Path, registry: str, tmp_path: Path) -> None:
    repository = f"pkgtool-test/{secrets.token_hex(6)}/busybox"
    imagekit.push_image(registry, repository, "1", [imagekit.busybox_image_layer("amd64")], arch="amd64",
                        config={"Entrypoint": ["/bin/busybox"], "Cmd": ["echo", "HELLO-FROM-THE-LOCAL-REGISTRY"]})
    image = f"{HOST_IN_GUEST}:{registry.rsplit(':', 1)[1]}/{repository}:1"
    daemon = {"insecure-registries": [f"{HOST_IN_GUEST}:{registry.rsplit(':', 1)[1]}"]}
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"docker": {"entries": {"daemon.json": {"content": json.dumps(daemon)}}}}))
    state = tmp_path / "state"

    # --- first boot: an empty disk
    vm = VM(docker_example, state, data)
    info, seconds = vm.wait_for_info()
    MEASURE["boot_seconds"]["docker/amd64/to-docker-info-first-boot"] = round(seconds, 1)
    assert "Server Version: 20.10" in info and "Docker Root Dir: /var/lib/docker" in info
    assert "Backing Filesystem: extfs" in info  # the data disk, not the tmpfs root
    assert f"{HOST_IN_GUEST}:" in info.split("Insecure Registries:")[1]  # daemon.json from the CD-ROM
    assert vm.ok("run", "--rm", image).strip() == "HELLO-FROM-THE-LOCAL-REGISTRY"

    # Where the daemon listens: eth0's address only, nothing on 0.0.0.0, :: or the bridge.
    listening = [line.split()[3] for line in vm.ok("run", "--rm", "--net", "host", image, "netstat", "-tln").splitlines()
                 if line.startswith("tcp")]
    assert [a for a in listening if a.endswith(f":{GUEST_PORT}")] == [f"10.0.2.15:{GUEST_PORT}"], listening
    # From a container on the bridge: the daemon is out of reach at every VM address,
    # while the network itself works (the registry on the host answers through NAT).
    probe = ("for target in 172.17.0.1:2375 10.0.2.15:2375 10.0.2.2:" + registry.rsplit(":", 1)[1] + "; do "
             "if nc -w 3 ${target%:*} ${target#*:} </dev/null >/dev/null 2>&1; then echo OPEN $target; "
             "else echo CLOSED $target; fi; done")
    reach = vm.ok("run", "--rm", "--entrypoint", "/bin/sh", image, "-c", probe).split("\n")
    assert reach[:3] == ["CLOSED 172.17.0.1:2375", "CLOSED 10.0.2.15:2375",
                         f"OPEN 10.0.2.2:{registry.rsplit(':', 1)[1]}"], reach
    vm.power_off(image)
    first = vm.console()
    for line in ("format: /dev/vda is empty: writing a GPT with one Linux partition",
                 "format: /dev/vda1: ext4 file system made (label docker)",
                 "mountie: /dev/vda1 (ext4) mounted on /var/lib/docker",
                 "metadata: wrote /run/config/docker/daemon.json", "init: shutdown finished"):
        assert line in first, first[-4000:]

    # --- second boot: the same state directory, the same disk
    vm = VM(docker_example, state, data)
    _info, seconds = vm.wait_for_info()
    MEASURE["boot_seconds"]["docker/amd64/to-docker-info-second-boot"] = round(seconds, 1)
    assert image in vm.ok("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert vm.ok("run", "--rm", "--pull", "never", image).strip() == "HELLO-FROM-THE-LOCAL-REGISTRY"
    vm.power_off(image)
    second = vm.console()[len(first):]
    assert "format: /dev/vda already has data (PTTYPE gpt), left alone" in second, second[-4000:]
    assert "mountie: /dev/vda1 (ext4) mounted on /var/lib/docker" in second
    assert sorted(p.name for p in state.iterdir()) == ["console.log", "data.iso", "docker.qcow2"]
