"""``docker``: ``NAME-docker.tar``, the system as an image in the archive format ``docker save``
writes and ``docker load`` reads: ``manifest.json``, the image config and one layer, the whole
root file system.

The image's entrypoint is ``/init``, so ``docker run -t --privileged NAME`` boots the system's
own init in the container: busybox init runs rcS, the onboot containers with runc, the
services.  ``-t`` gives the container a ``/dev/console`` (init writes there);
``--privileged`` lets init mount and runc make containers.  ``docker stop`` sends SIGUSR2,
busybox init's power-off signal, so rcK runs the onshutdown containers first.  The kernel
has no use in a container (the host's runs it), so its files are left out: ``boot/`` (as
from every output but ``tar``) and the modules under ``lib/modules``, which init would
otherwise load into the host's kernel when its version matched.  The image is tagged
``NAME:latest`` when NAME is a valid repository name, else it loads untagged.

Determinism: the layer is the ``tar`` writer's (sorted, every mtime ``SOURCE_DATE_EPOCH``,
numeric owners), the config is compact JSON with sorted keys and ``created`` at that time,
and the archive's members come in a fixed order with fixed metadata.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import time
from pathlib import Path

from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.tarwriter import write_tar

MODULE_DIRS = ("lib/modules", "usr/lib/modules")
PLATFORM = {"amd64": ("amd64", None), "arm64": ("arm64", "v8"), "s390x": ("s390x", None)}
# Docker's grammar for a one-component repository name (reference/regexp.go).
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _kernel_path(path: str) -> bool:
    return any(path == d or path.startswith(d + "/") for d in MODULE_DIRS)


def _rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def image_config(inp: FormatInput, diff_id: str) -> bytes:
    arch, variant = PLATFORM[inp.arch]
    created = _rfc3339(inp.mtime)
    config: dict[str, object] = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {"Entrypoint": ["/init"], "StopSignal": "SIGUSR2"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "pkgtool image build --format docker"}],
    }
    if variant:
        config["variant"] = variant
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def repo_tags(name: str) -> list[str]:
    return [f"{name}:latest"] if _REPOSITORY.fullmatch(name) else []


def _add(archive: tarfile.TarFile, name: str, *, mtime: int, data: bytes | None = None, path: Path | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uname, info.gname = mtime, "", ""
    if data is None and path is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(info)
        return
    info.mode = 0o644
    if path is not None:
        info.size = path.stat().st_size
        with path.open("rb") as handle:
            archive.addfile(info, handle)
    else:
        assert data is not None
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def write(inp: FormatInput, stage: Path) -> list[Path]:
    layer = inp.work / "docker-layer.tar"
    with layer.open("wb") as raw:
        write_tar(inp.tree, raw, mtime=inp.mtime, skip=_kernel_path)
    layer_hex = _sha256(layer)
    config = image_config(inp, f"sha256:{layer_hex}")
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": repo_tags(inp.name), "Layers": [f"{layer_hex}/layer.tar"]}]
    dest = stage / f"{inp.name}-docker.tar"
    with dest.open("wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        _add(archive, f"{layer_hex}/", mtime=inp.mtime)
        _add(archive, f"{layer_hex}/layer.tar", mtime=inp.mtime, path=layer)
        _add(archive, config_name, mtime=inp.mtime, data=config)
        _add(archive, "manifest.json", mtime=inp.mtime, data=json.dumps(manifest, separators=(",", ":")).encode())
    layer.unlink()
    return [dest]
