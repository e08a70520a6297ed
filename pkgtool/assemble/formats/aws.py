"""``aws``: ``NAME.raw``, the cloud disk (:mod:`.cloud_disk`) as a raw image for EC2's
``import-snapshot`` (``Format=RAW``) and ``register-image``: one GPT disk that boots with
BIOS and with UEFI on amd64 (register it with ``--boot-mode uefi-preferred`` or either
mode), with UEFI on arm64 (Graviton boots UEFI only).

The file is the disk byte for byte, whole MiB in size and sparse on disk.  EC2 rounds the
snapshot up to whole GiB.  Nitro instances reach their disks through NVMe and their network
through ENA: those drivers must be in the image's kernel (the full Debian flavour has them;
the VM flavour, kernel/bookworm-6.1-virt, has virtio only).
"""

from __future__ import annotations

from pathlib import Path

from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.cloud_disk import cloud_raw
from pkgtool.assemble.formats.kernel_initrd import place


def write(inp: FormatInput, stage: Path) -> list[Path]:
    return [place(cloud_raw(inp), stage / f"{inp.name}.raw")]
