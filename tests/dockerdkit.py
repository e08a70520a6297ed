"""A second, throw-away dockerd: a second BuildKit builder for tests and benchmarks.

It runs beside the stack's daemon with its own data root, exec root, pidfile, socket and
containerd namespaces, and without iptables rules (``--iptables=false --ip-masq=false``),
so it never touches the stack's state; its build cache can be pruned freely.

Its bridge is its own too: a bridge interface made here and passed as ``--bridge``.  Not
``--bridge=none``: with that, dockerd deletes the host's ``docker0`` interface at startup
(it assumes docker0 is its own leftover), which takes the default network away from the
stack's daemon: its RUN steps with sandbox networking then fail with "could not find bridge
docker0".  It pulls bases from
the loopback registry without extra configuration (dockerd allows loopback registries over
plain HTTP).  Optionally it also listens on ``tcp://127.0.0.1:PORT`` with mutual TLS, for
the builder TLS options.

Evidence from the builder's side comes from the daemon itself: its build cache records
(``docker system df``: :func:`build_cache`) and its log.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_START_TIMEOUT = 90.0


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    cert: Path  # the client's
    key: Path  # the client's


@dataclass
class Dockerd:
    """A running second dockerd."""

    state: Path
    process: subprocess.Popen[bytes]
    tls: TLSFiles | None = None
    tcp_port: int | None = None
    bridge: str = ""

    @property
    def socket(self) -> Path:
        return self.state / "d.sock"

    @property
    def host(self) -> str:
        """``unix://…`` address of its API socket."""
        return f"unix://{self.socket}"

    @property
    def tcp_host(self) -> str:
        assert self.tcp_port is not None
        return f"tcp://127.0.0.1:{self.tcp_port}"

    @property
    def log(self) -> Path:
        return self.state / "dockerd.log"

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, timeout=120)

    def build_cache(self) -> list[dict[str, Any]]:
        """The daemon's BuildKit cache records (``docker system df -v``'s BuildCache)."""
        client = self.client()
        try:
            return list(client.df().get("BuildCache") or [])
        finally:
            client.close()

    def prune_build_cache(self) -> None:
        """Empty this daemon's BuildKit cache (``docker builder prune -af``)."""
        client = self.client()
        try:
            client.api.prune_builds(all=True)  # type: ignore[no-untyped-call]
            assert not self.build_cache(), self.build_cache()
        finally:
            client.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        # dockerd unmounts its data root's private bind mount on exit; be sure before rm.
        subprocess.run(["umount", "-R", str(self.state / "data")], capture_output=True, check=False)
        shutil.rmtree(self.state, ignore_errors=True)
        if self.bridge:
            subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_tls(directory: Path) -> tuple[TLSFiles, Path, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate
    (openssl).  Returns the client's files and the server's cert and key."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=pkgtool test CA", "-keyout", "ca-key.pem", "-out", "ca.pem")
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}-key.pem", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return (TLSFiles(directory / "ca.pem", directory / "client.pem", directory / "client-key.pem"),
            directory / "server.pem", directory / "server-key.pem")


def _make_bridge(name: str) -> None:
    """A bridge interface with a private /24 no other interface uses."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for third in random.sample(range(1, 255), 254):
        subnet = f"10.213.{third}."
        if subnet not in used:
            break
    else:
        raise RuntimeError("no free 10.213.x.0/24 for the second dockerd's bridge")
    subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True, capture_output=True)
    subprocess.run(["ip", "addr", "add", f"{subnet}1/24", "dev", name], check=True, capture_output=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True, capture_output=True)


def start(*, tls: bool = False) -> Dockerd:
    """Start a second dockerd (about 6 s); with ``tls`` also on tcp://127.0.0.1 with mutual TLS."""
    # Short: unix socket paths are limited to 107 bytes.
    state = Path(tempfile.mkdtemp(prefix="pkgtool-d2-", dir="/tmp"))
    suffix = state.name[-8:].lower()
    bridge = f"pkgtd2{secrets.token_hex(4)}"  # at most 15 characters, as Linux wants
    args = ["dockerd", "--data-root", str(state / "data"), "--exec-root", str(state / "exec"),
            "--pidfile", str(state / "dockerd.pid"), "-H", f"unix://{state / 'd.sock'}",
            f"--bridge={bridge}", "--iptables=false", "--ip-masq=false", "--ip6tables=false",
            "--containerd-namespace", f"d2-{suffix}", "--containerd-plugins-namespace", f"d2p-{suffix}"]
    tls_files = None
    port = None
    if tls:
        tls_files, server_cert, server_key = make_tls(state / "tls")
        port = _free_port()
        args += ["-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", str(tls_files.ca),
                 "--tlscert", str(server_cert), "--tlskey", str(server_key)]
    _make_bridge(bridge)
    try:
        with open(state / "dockerd.log", "wb") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError:
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
        raise
    daemon = Dockerd(state, process, tls_files, port, bridge)
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = daemon.log.read_text(errors="replace")[-2000:]
            daemon.stop()
            raise RuntimeError(f"second dockerd exited ({process.returncode}): {text}")
        if daemon.socket.exists():
            with contextlib.suppress(Exception):
                client = daemon.client()
                client.ping()
                client.close()
                return daemon
        time.sleep(0.2)
    daemon.stop()
    raise RuntimeError(f"second dockerd did not answer within {_START_TIMEOUT:.0f} s")


@contextlib.contextmanager
def running(*, tls: bool = False) -> Iterator[Dockerd]:
    daemon = start(tls=tls)
    try:
        yield daemon
    finally:
        daemon.stop()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # manual probing: start one, print its address, stop it on SIGTERM/SIGINT
    signal.signal(signal.SIGTERM, _interrupt)
    with running(tls=bool(os.environ.get("TLS"))) as d:
        print(d.host, d.tcp_port or "", d.state, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
