"""LinuxKit's per-image rewrites (``ImageTar`` in linuxkit's ``moby/build/image.go``).

Images are built with ``docker build``, which leaves files behind that describe the build
container rather than the image (``.dockerenv``, a ``Dockerfile``, bind-mount targets such
as ``etc/hostname``), and a booted system needs a few paths to exist (``dev``, ``proc``,
``sys``, ``etc/mtab``).  LinuxKit filters every image it unpacks; so do we, with the same
tables, applied to the image's flattened tree as one synthetic top layer:

* removed: ``.dockerenv``, ``Dockerfile``, ``dev/console``, ``dev/pts``, ``dev/shm``,
  ``etc/hostname`` (a removed directory loses its contents too, where LinuxKit drops only
  the directory's own tar entry);
* replaced: ``etc/hosts`` gets the standard localhost table and ``etc/resolv.conf`` a
  "no resolv.conf configured" comment, or, for init images, becomes a symlink to
  ``/run/resolvconf/resolv.conf`` (the file LinuxKit's dhcpcd writes), in both cases
  whether or not the image had the file;
* ensured: directories ``dev``, ``dev/pts``, ``dev/shm``, ``etc``, ``proc``, ``sys``, and
  ``etc/mtab -> /proc/mounts`` unless the image has its own ``etc/mtab``.

Where the image already has ``etc/hosts``/``etc/resolv.conf`` as a regular file, its mode
and owner are kept (LinuxKit rewrites the contents under the original tar header).
"""

from __future__ import annotations

from pkgtool.oci.filetree import BytesContent, Inode, Kind, Tree

# The synthetic rewrite layer sits above every real layer of the image.
REWRITE_LAYER = 1 << 30

EXCLUDE: tuple[str, ...] = (".dockerenv", "Dockerfile", "dev/console", "dev/pts", "dev/shm", "etc/hostname")

HOSTS = (
    "127.0.0.1       localhost\n"
    "::1     localhost ip6-localhost ip6-loopback\n"
    "fe00::0 ip6-localnet\n"
    "ff00::0 ip6-mcastprefix\n"
    "ff02::1 ip6-allnodes\n"
    "ff02::2 ip6-allrouters\n"
)
NO_RESOLV = "\n# no resolv.conf configured\n"
# Init images get this symlink instead, so the network service's resolver config is seen.
RESOLVCONF_SYMLINK = "/run/resolvconf/resolv.conf"

_ENSURE_DIRS: tuple[str, ...] = ("dev", "dev/pts", "dev/shm", "etc", "proc", "sys")


def remove(tree: Tree, path: str) -> None:
    """Drop ``path`` (and anything below it) from a flattened image tree."""
    tree.hide(path, layer=REWRITE_LAYER)


def rewrite(tree: Tree, *, init: bool) -> None:
    """Apply LinuxKit's rewrites to one image's flattened tree (``init``: an ``init:`` image)."""
    for path in EXCLUDE:
        remove(tree, path)
    for path in _ENSURE_DIRS:
        existing = tree.get(path)
        if existing is None or existing.kind is not Kind.DIR:
            tree.put(path, Inode(Kind.DIR, mode=0o755), layer=REWRITE_LAYER, what=f"rewrite {path}")
    if tree.get("etc/mtab") is None:
        tree.put("etc/mtab", Inode(Kind.SYMLINK, mode=0o777, linkname="/proc/mounts"), layer=REWRITE_LAYER)
    _replace_file(tree, "etc/hosts", HOSTS)
    if init:
        remove(tree, "etc/resolv.conf")
        tree.put("etc/resolv.conf", Inode(Kind.SYMLINK, mode=0o777, linkname=RESOLVCONF_SYMLINK), layer=REWRITE_LAYER)
    else:
        _replace_file(tree, "etc/resolv.conf", NO_RESOLV)


def _replace_file(tree: Tree, path: str, text: str) -> None:
    old = tree.get(path)
    inode = Inode(Kind.FILE, mode=0o644, content=BytesContent(text.encode()))
    if old is not None and old.kind is Kind.FILE:
        inode.mode, inode.uid, inode.gid = old.mode, old.uid, old.gid
    # A symlink or directory in the way is replaced, never followed out of the image.
    remove(tree, path)
    tree.put(path, inode, layer=REWRITE_LAYER, what=f"rewrite {path}")
