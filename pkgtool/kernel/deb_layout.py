"""Turn a Debian ``linux-image`` .deb into LinuxKit's kernel image layout.

The image's single layer holds, at its root::

    /kernel       the bootable image (x86 bzImage, arm64 Image, s390 image) — checked by magic;
                  with kernel.yml's ``compress: gzip``, the arm64 Image gzip-compressed
    /kernel.tar   the modules as lib/modules/<release>/..., a deterministic tar, with the
                  modules.dep/alias/... index that Debian's postinst would have made
    /System.map   as Debian ships it (a stub pointing at the -dbg package: Debian strips it)
    /config       the kernel's .config
    /vmlinux      amd64 only, when kernel.yml asks: the ELF unpacked from the bzImage

How the .deb is read (its bytes were sha256-verified first, and are still treated as
hostile): ``data.tar`` is streamed once; member names are normalised and refused if
absolute, if they contain ``..`` or if they are not plain files, directories or symlinks.
Module files are spooled into a private temp root by our own ``open()`` calls (never
``tarfile.extract``), symlinks are recorded but never created on disk, so nothing can be
written outside the temp root.  Then ``kernel.tar`` is written from that spool in sorted
order with fixed owner (0:0, no names) and mtimes, so the same .deb always gives the same
bytes.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from pkgtool.errors import PkgtoolError
from pkgtool.kernel import bzimage, kernel_form
from pkgtool.kernel.deb import open_data_tar
from pkgtool.kernel.kernel_yml import ModuleGlob
from pkgtool.kernel.module_select import parse_modules_dep, select_modules

# Bump when the layout or how it is produced changes: it is part of the kernel tag.
LAYOUT_VERSION = "3"
_SMALL_FILE_LIMIT = 256 * 1024 * 1024  # a single kernel/config/map file; Image is ~33 MB


class KernelLayoutError(PkgtoolError):
    """The .deb does not contain what a kernel image needs, or contains something unsafe."""


@dataclass
class KernelLayout:
    """The files of one arch's kernel image, in ``root``."""

    release: str  # uname -r, e.g. 6.1.0-50-amd64
    root: Path
    files: list[str] = field(default_factory=list)  # names at the image root, sorted
    modules: int = 0  # .ko files in kernel.tar
    dropped: int = 0  # .ko files left out by kernel.yml's modules: include/exclude


def _normalise(name: str, source: str) -> str:
    clean = name[2:] if name.startswith("./") else name
    clean = clean.rstrip("/")
    if not clean or clean == ".":
        return ""
    if clean.startswith("/") or "\\" in clean or "\x00" in clean:
        raise KernelLayoutError(f"{source}: refusing member with unsafe name {name!r}")
    parts = clean.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise KernelLayoutError(f"{source}: refusing member with unsafe name {name!r}")
    return clean


@dataclass
class _Spool:
    root: Path
    boot: dict[str, bytes] = field(default_factory=dict)  # boot/<name> -> bytes
    dirs: dict[str, int] = field(default_factory=dict)  # lib/modules/... -> mode
    files: dict[str, int] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)


def _spool_deb(deb: Path, spool: _Spool) -> None:
    source = deb.name
    with open_data_tar(deb) as tf:
        for member in tf:
            name = _normalise(member.name, source)
            if not name:
                continue
            in_boot = name.startswith("boot/") and name.count("/") == 1
            in_modules = name.startswith("lib/modules/") or name == "lib/modules"
            if not (in_boot or in_modules):
                continue  # docs, bug-report scripts, device trees: not part of the layout
            if member.isdir():
                if in_modules:
                    spool.dirs[name] = member.mode & 0o7777
            elif member.isfile():
                if in_boot:
                    if member.size > _SMALL_FILE_LIMIT:
                        raise KernelLayoutError(f"{source}: {name} is implausibly large ({member.size} bytes)")
                    fobj = tf.extractfile(member)
                    assert fobj is not None
                    spool.boot[name.removeprefix("boot/")] = fobj.read()
                else:
                    _spool_file(tf, member, spool.root / name)
                    spool.files[name] = member.mode & 0o7777
            elif member.issym() and in_modules:
                target = member.linkname
                resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
                if target.startswith("/") or not resolved.startswith("lib/modules/"):
                    raise KernelLayoutError(f"{source}: refusing symlink {name} -> {target} leaving lib/modules")
                spool.symlinks[name] = target
            else:
                raise KernelLayoutError(f"{source}: refusing {name}: only files, directories and symlinks are expected")


def _spool_file(tf: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    fobj = tf.extractfile(member)
    assert fobj is not None
    dest.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL|O_NOFOLLOW: names were validated, and nothing on disk is a symlink, but a
    # duplicate member must not overwrite silently.
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(fobj, out, 1 << 20)


def _release(spool: _Spool, source: str) -> str:
    kernels = sorted(n for n in spool.boot if n.startswith("vmlinuz-") or n.startswith("vmlinux-"))
    if len(kernels) != 1:
        raise KernelLayoutError(f"{source}: expected one boot/vmlinuz-<release>, found {kernels or 'none'}")
    release = kernels[0].split("-", 1)[1]
    for needed in (f"config-{release}", f"System.map-{release}"):
        if needed not in spool.boot:
            raise KernelLayoutError(f"{source}: missing boot/{needed}")
    if f"lib/modules/{release}" not in spool.dirs:
        raise KernelLayoutError(f"{source}: missing lib/modules/{release}/")
    return release


def _tarinfo(name: str, *, kind: bytes, mode: int, epoch: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.size = size
    info.linkname = linkname
    return info


def write_modules_tar(spool_root: Path, *, dirs: dict[str, int], files: dict[str, int],
                      symlinks: dict[str, str], out: Path, epoch: int) -> None:
    """Write ``kernel.tar``: every parent directory, sorted names, fixed owner and mtime."""
    all_dirs = dict(dirs)
    for name in [*files, *symlinks, *dirs]:
        parent = posixpath.dirname(name)
        while parent and parent not in all_dirs:
            all_dirs[parent] = 0o755
            parent = posixpath.dirname(parent)
    names = sorted({*all_dirs, *files, *symlinks})
    # PAX only where a name needs it (long module paths); no pax mtime/atime records.
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for name in names:
            if name in all_dirs:
                tf.addfile(_tarinfo(name + "/", kind=tarfile.DIRTYPE, mode=all_dirs[name], epoch=epoch))
            elif name in symlinks:
                tf.addfile(_tarinfo(name, kind=tarfile.SYMTYPE, mode=0o777, epoch=epoch, linkname=symlinks[name]))
            else:
                path = spool_root / name
                with open(path, "rb") as f:
                    info = _tarinfo(name, kind=tarfile.REGTYPE, mode=files[name], epoch=epoch,
                                    size=os.fstat(f.fileno()).st_size)
                    tf.addfile(info, f)


def _index_modules(spool: _Spool, release: str, source: str) -> None:
    """Run the host's ``depmod`` over the spooled modules.

    Debian's .deb ships no ``modules.dep``: its postinst generates it on the installed
    system.  A LinuxKit image has no postinst step, and ``modprobe`` without the index
    cannot load anything, so make it here.  depmod's output depends only on the module
    files (it sorts by modules.order), so the tar stays reproducible.
    """
    depmod = shutil.which("depmod") or next((p for p in ("/usr/sbin/depmod", "/sbin/depmod") if os.path.exists(p)), None)
    if depmod is None:
        raise KernelLayoutError("building a kernel image needs depmod, which is not installed: apt-get install kmod")
    before = {p for p in (spool.root / "lib/modules" / release).iterdir()}
    proc = subprocess.run([depmod, "--basedir", str(spool.root), release], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split())[-300:]
        raise KernelLayoutError(f"{source}: depmod failed: {detail}")
    for path in sorted((spool.root / "lib/modules" / release).iterdir()):
        if path not in before and path.is_file():
            spool.files[f"lib/modules/{release}/{path.name}"] = 0o644


def build_kernel_layout(deb: Path, *, arch: str, epoch: int, vmlinux: bool, workdir: Path,
                        exclude: tuple[str, ...] = (), include: tuple[ModuleGlob, ...] = (),
                        compress: str = "", kernel_name: str = "") -> KernelLayout:
    """Read ``deb`` and write the layout's files into ``workdir/image``.

    ``include``/``exclude`` choose the modules kept (:mod:`pkgtool.kernel.module_select`);
    ``compress`` is the form /kernel is shipped in (:mod:`pkgtool.kernel.kernel_form`);
    ``kernel_name`` names the kernel in errors (default: the .deb's file name).
    """
    spool = _Spool(root=workdir / "spool")
    spool.root.mkdir(parents=True)
    _spool_deb(deb, spool)
    release = _release(spool, deb.name)
    dropped = 0
    if include or exclude:
        dropped = drop_modules(spool, release, include=include, exclude=exclude,
                               source=deb.name, kernel=kernel_name or deb.name)
    kernel = spool.boot[f"vmlinuz-{release}"] if f"vmlinuz-{release}" in spool.boot else spool.boot[f"vmlinux-{release}"]
    layout = write_layout(spool, release=release, kernel=kernel, config=spool.boot[f"config-{release}"],
                          system_map=spool.boot[f"System.map-{release}"], arch=arch, epoch=epoch,
                          vmlinux=vmlinux, image=workdir / "image", source=f"{deb.name}: boot/vmlinuz-{release}",
                          compress=compress)
    layout.dropped = dropped
    return layout


def drop_modules(spool: _Spool, release: str, *, include: tuple[ModuleGlob, ...], exclude: tuple[str, ...],
                 source: str, kernel: str) -> int:
    """Remove from the spool the modules kernel.yml's ``modules:`` rule does not keep
    (:func:`pkgtool.kernel.module_select.select_modules`, over ``modules.dep`` of the whole
    tree from a first depmod run); returns how many went.  Directories left empty go too.
    """
    _index_modules(spool, release, source)
    prefix = f"lib/modules/{release}/"
    needs = parse_modules_dep((spool.root / prefix / "modules.dep").read_text(encoding="utf-8", errors="replace"))
    builtin_file = spool.root / prefix / "modules.builtin"
    builtin = builtin_file.read_text(encoding="utf-8", errors="replace").split() if builtin_file.is_file() else []
    selection = select_modules(needs, builtin, include=include, exclude=exclude, kernel=kernel)
    gone = set(needs) - selection.keep
    for module in gone:
        name = prefix + module
        spool.files.pop(name, None)
        (spool.root / name).unlink(missing_ok=True)
    # Directories whose modules all went (keep those that still hold anything).
    used = {posixpath.dirname(n) for n in [*spool.files, *spool.symlinks]}
    holders = set()
    for name in used:
        while name and name not in holders:
            holders.add(name)
            name = posixpath.dirname(name)
    for directory in [d for d in spool.dirs if d not in holders]:
        del spool.dirs[directory]
    return len(gone)


def spool_installed_modules(root: Path, release: str, *, source: str) -> _Spool:
    """A spool over ``root/lib/modules/<release>`` as ``make modules_install`` left it.

    Kbuild's absolute ``build`` and ``source`` symlinks (into the build machine's tree) are
    dropped; any other symlink must stay inside ``lib/modules``; nothing but files,
    directories and symlinks is accepted.
    """
    spool = _Spool(root=root)
    top = root / "lib" / "modules" / release
    if not top.is_dir() or top.is_symlink():
        raise KernelLayoutError(f"{source}: modules_install made no lib/modules/{release}/")
    for current, dirs, files in os.walk(top):
        dirs.sort()
        rel_dir = Path(current).relative_to(root).as_posix()
        spool.dirs[rel_dir] = os.lstat(current).st_mode & 0o7777
        for name in sorted([*dirs, *files]):
            path = Path(current) / name
            rel = f"{rel_dir}/{name}"
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                if rel_dir == f"lib/modules/{release}" and name in ("build", "source"):
                    path.unlink()
                    continue
                resolved = posixpath.normpath(posixpath.join(rel_dir, target))
                if target.startswith("/") or not resolved.startswith("lib/modules/"):
                    raise KernelLayoutError(f"{source}: refusing symlink {rel} -> {target} leaving lib/modules")
                spool.symlinks[rel] = target
            elif stat.S_ISREG(st.st_mode):
                spool.files[rel] = st.st_mode & 0o7777
            elif not stat.S_ISDIR(st.st_mode):
                raise KernelLayoutError(f"{source}: refusing {rel}: only files, directories and symlinks are expected")
        dirs[:] = [d for d in dirs if not (Path(current) / d).is_symlink()]
    return spool


def write_layout(spool: _Spool, *, release: str, kernel: bytes, config: bytes, system_map: bytes,
                 arch: str, epoch: int, vmlinux: bool, image: Path, source: str, compress: str = "") -> KernelLayout:
    """Index the spooled modules and write /kernel, /kernel.tar, /System.map, /config (+ /vmlinux)."""
    _index_modules(spool, release, source)
    bzimage.check_kernel_kind(kernel, arch=arch, source=source)
    image.mkdir()
    (image / "kernel").write_bytes(kernel_form.compressed(kernel, compress))
    (image / "config").write_bytes(config)
    (image / "System.map").write_bytes(system_map)
    if vmlinux:
        (image / "vmlinux").write_bytes(bzimage.extract_vmlinux(kernel, source=source))
    write_modules_tar(spool.root, dirs=spool.dirs, files=spool.files, symlinks=spool.symlinks,
                      out=image / "kernel.tar", epoch=epoch)
    shutil.rmtree(spool.root)
    modules = sum(1 for name in spool.files if name.endswith((".ko", ".ko.xz", ".ko.zst", ".ko.gz")))
    return KernelLayout(release=release, root=image, files=sorted(p.name for p in image.iterdir()), modules=modules)
