"""The architectures pkgtool builds, assembles and boots, in the one order it lists them.

Every per-arch listing (index entries, ``--arch`` choices, kernel and base arches) uses this
order, so an index's digest depends only on which manifests it lists.

riscv64 is not here: bookworm, which the base image, the kernels and the QEMU firmware come
from, has no riscv64 port (it became official in trixie), so a riscv64 package could be
named but never built from the base, booted or tested.  An arch is added here together
with its base, kernel and boot path, not before.
"""

from __future__ import annotations

ARCHES: tuple[str, ...] = ("amd64", "arm64", "s390x")


def arch_rank(arch: str) -> int:
    """Sort key that puts known arches in :data:`ARCHES` order and anything else last."""
    return ARCHES.index(arch) if arch in ARCHES else len(ARCHES)
