"""``pkgtool kernel build --from-source``: the same kernel image layout, compiled here.

Inputs, all named in kernel.yml's ``source`` section:

* Debian's ``linux-source-<series>`` package (the patched kernel tree as
  ``usr/src/linux-source-<series>.tar.xz``), pinned by version and sha256 like the
  linux-image debs, fetched with ``apt-get download`` and verified before it is parsed;
* per arch, Kconfig fragments (``kernel/<series>/config/*.config``), applied in order over
  ``make allnoconfig`` with ``KCONFIG_ALLCONFIG``.  Every option a fragment sets must come
  out of Kconfig with that value, or the build stops and names the fragment line (an
  option with a missing dependency would otherwise vanish silently).

Steps: check (and, as root, install with apt-get) the Debian build dependencies: make, gcc,
bc, bison, flex, libssl-dev, libelf-dev, kmod, plus ``gcc-<triplet>`` cross compilers for
foreign arches; unpack the source tree into a private temp root (tar members are filtered
with Python's ``data`` filter: no absolute names, no ``..``, no links leaving the root, no
devices); then per arch, one after another (each compile already uses every CPU given by
``--jobs``), an out-of-tree build in its own directory::

    make O=<dir> ARCH=<kbuild arch> CROSS_COMPILE=<triplet>- KCONFIG_ALLCONFIG=<fragments> allnoconfig
    make O=<dir> ... -j<jobs> <bzImage|Image> modules
    make O=<dir> ... INSTALL_MOD_PATH=<spool> INSTALL_MOD_STRIP=1 DEPMOD=true modules_install

and :func:`pkgtool.kernel.deb_layout.write_layout` turns the results into /kernel, /kernel.tar
(with the depmod index), /System.map, /config and, for amd64 when ``arches.amd64.vmlinux``
is set, /vmlinux: the layout the .deb path produces.  The make output goes to a log file
in the work cache (named in errors).

Reproducibility: make runs with a clean environment (``LC_ALL=C``, ``TZ=UTC``), with
``SOURCE_DATE_EPOCH``, ``KBUILD_BUILD_TIMESTAMP`` (from kernel.yml's
``source_date_epoch``), ``KBUILD_BUILD_USER``/``HOST`` = ``pkgtool``,
``KBUILD_BUILD_VERSION=1`` and an empty ``LOCALVERSION``; the fragments turn off what
would embed randomness (module signing keys, in-kernel config/header archives).  The same
inputs and the same Debian toolchain give the same bytes; the toolchain's version is
recorded in each image's ``dev.pkgtool.kernel.compiler`` label.

Tag: ``<source version>-<hash>`` over the source pin, the fragments' bytes, the epoch and
the layout/recipe versions, pushed to ``source.image`` (a repository of its own, so a
from-source tag is never mistaken for a .deb one).
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pkgtool import rootfs_image
from pkgtool.arches import ARCHES
from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.jsonio import hashed_json
from pkgtool.kernel.deb import open_data_tar
from pkgtool.kernel.deb_layout import (
    LAYOUT_VERSION,
    KernelLayout,
    spool_installed_modules,
    write_layout,
)
from pkgtool.kernel.kernel_yml import KernelSource, KernelSpec

Log = Callable[[str], None]
# Bump when the build recipe (make invocations, environment) changes: part of the tag.
SOURCE_RECIPE_VERSION = "1"
TAG_HEX = 16

KBUILD_ARCH = {"amd64": "x86_64", "arm64": "arm64", "s390x": "s390"}
TRIPLET = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu", "s390x": "s390x-linux-gnu"}
# make target, and the file it leaves in the build directory
KERNEL_TARGET = {
    "amd64": ("bzImage", "arch/x86/boot/bzImage"),
    "arm64": ("Image", "arch/arm64/boot/Image"),
    "s390x": ("bzImage", "arch/s390/boot/bzImage"),
}
HOST_PACKAGES = ("make", "gcc", "libc6-dev", "bc", "bison", "flex", "libssl-dev", "libelf-dev",
                 "kmod", "cpio", "xz-utils")

# The linux-source tree is ~1.5 GB in ~80k files: bound what a hostile tarball can write.
MAX_TREE_BYTES = 8 * 1024**3
MAX_TREE_MEMBERS = 400_000
_TARBALL_RE = re.compile(r"^usr/src/(linux-source-[0-9][0-9.]*)\.tar\.xz$")
_RELEASE_RE = re.compile(r"^[0-9][A-Za-z0-9._+-]*$")
_FRAGMENT_SET_RE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_FRAGMENT_UNSET_RE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def _quiet(_msg: str) -> None:
    return None


class SourceBuildError(PkgtoolError):
    """The from-source kernel build failed (configuration, compile or layout)."""


# --------------------------------------------------------------------------- host packages


def host_arch() -> str:
    try:
        out = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise SourceBuildError("building a kernel from source needs a Debian host (dpkg --print-architecture failed)") from None
    return out.strip()


def cross_prefix(arch: str, host: str) -> str:
    return "" if arch == host else f"{TRIPLET[arch]}-"


def required_packages(arches: Sequence[str], host: str) -> list[str]:
    """The Debian packages a from-source build of ``arches`` needs on a ``host`` machine."""
    wanted = list(HOST_PACKAGES)
    for arch in arches:
        if arch != host:
            wanted.append(f"gcc-{TRIPLET[arch].replace('_', '-')}")
    return wanted


def missing_packages(packages: Sequence[str]) -> list[str]:
    """Those of ``packages`` that dpkg does not list as installed."""
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n", *packages],
                          capture_output=True, text=True, check=False, env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    installed = set()
    for line in proc.stdout.splitlines():
        name, _, status = line.partition(" ")
        if status.startswith("ii"):
            installed.add(name.split(":")[0])
    return [p for p in packages if p not in installed]


def ensure_packages(packages: Sequence[str], *, install: bool, log: Log) -> None:
    """Install missing build dependencies with apt-get (root only), or name them in an error."""
    missing = missing_packages(packages)
    if not missing:
        return
    command = f"apt-get install --no-install-recommends {' '.join(missing)}"
    if not install or os.geteuid() != 0:
        raise SourceBuildError(f"building the kernel from source needs Debian packages that are not installed: "
                               f"{', '.join(missing)}; run `{command}`")
    log(f"installing build dependencies: {' '.join(missing)}")
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600", *missing],
        capture_output=True, text=True, check=False, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if proc.returncode != 0 or missing_packages(missing):
        detail = " ".join((proc.stderr or proc.stdout).split())[-300:]
        raise SourceBuildError(f"could not install the kernel build dependencies {', '.join(missing)} "
                               f"(`{command}`): {detail}")


# --------------------------------------------------------------------------- source tree


def _tree_filter(top: str, budget: list[int]) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo | None]:
    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        budget[0] -= 1
        budget[1] -= max(member.size, 0)
        if budget[0] < 0 or budget[1] < 0:
            raise SourceBuildError(f"kernel source tarball exceeds {MAX_TREE_MEMBERS} members or {MAX_TREE_BYTES} bytes")
        name = member.name.removeprefix("./")
        if name.split("/")[0] != top:
            raise SourceBuildError(f"kernel source tarball: member {member.name!r} is outside {top}/")
        try:
            # No absolute names, no '..', no links leaving the root, no devices or fifos,
            # no setuid bits: extraction can only create plain files, dirs and links under dest.
            return tarfile.data_filter(member, dest)
        except tarfile.FilterError as exc:
            raise SourceBuildError(f"kernel source tarball: refusing {member.name!r}: {exc}") from None
    return check


def extract_source(deb: Path, dest: Path) -> Path:
    """Unpack the kernel tree from a (sha256-verified) linux-source .deb; returns its root."""
    dest.mkdir(parents=True, exist_ok=True)
    with open_data_tar(deb) as outer:
        for member in outer:
            match = _TARBALL_RE.match(member.name.removeprefix("./"))
            if match is None or not member.isfile():
                continue
            top = match.group(1)
            inner_raw = outer.extractfile(member)
            assert inner_raw is not None
            _extract_tarball(inner_raw, dest, top, source=deb.name)
            root = dest / top
            if not (root / "Makefile").is_file() or not (root / "Kconfig").is_file():
                raise SourceBuildError(f"{deb.name}: {top}.tar.xz holds no kernel tree (no Makefile/Kconfig)")
            return root
    raise SourceBuildError(f"{deb.name}: no usr/src/linux-source-*.tar.xz inside; is this a linux-source package?")


def _extract_tarball(raw: IO[bytes], dest: Path, top: str, *, source: str) -> None:
    budget = [MAX_TREE_MEMBERS, MAX_TREE_BYTES]
    try:
        with lzma.LZMAFile(raw) as xz, tarfile.open(fileobj=xz, mode="r|") as tf:
            tf.extractall(dest, filter=_tree_filter(top, budget))
    except (tarfile.TarError, lzma.LZMAError, EOFError) as exc:
        raise SourceBuildError(f"{source}: corrupt kernel source tarball: {exc}") from None


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Fragments:
    text: str  # the fragments concatenated, for KCONFIG_ALLCONFIG
    wanted: dict[str, str]  # CONFIG_X -> value ("n" for "is not set"); the last fragment wins
    where: dict[str, str]  # CONFIG_X -> file:line that set it


def read_fragments(files: Sequence[Path]) -> Fragments:
    wanted: dict[str, str] = {}
    where: dict[str, str] = {}
    parts: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: cannot read Kconfig fragment: {exc}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if set_match := _FRAGMENT_SET_RE.match(stripped):
                symbol, value = set_match.groups()
            elif unset_match := _FRAGMENT_UNSET_RE.match(stripped):
                symbol, value = unset_match.group(1), "n"
            elif not stripped or stripped.startswith("#"):
                continue
            else:
                raise UsageError(f"{path}:{number}: expected CONFIG_X=value, '# CONFIG_X is not set' or a comment")
            wanted[symbol] = value
            where[symbol] = f"{path}:{number}"
        parts.append(text if text.endswith("\n") else text + "\n")
    return Fragments(text="".join(parts), wanted=wanted, where=where)


def parse_config(text: str) -> dict[str, str]:
    """A resolved ``.config`` as CONFIG_X -> value (``n`` for "is not set")."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if set_match := _FRAGMENT_SET_RE.match(line):
            out[set_match.group(1)] = set_match.group(2)
        elif unset_match := _FRAGMENT_UNSET_RE.match(line):
            out[unset_match.group(1)] = "n"
    return out


def config_problems(fragments: Fragments, resolved: dict[str, str]) -> list[str]:
    """Each fragment line the resolved configuration does not honour."""
    problems = []
    for symbol, want in fragments.wanted.items():
        have = resolved.get(symbol, "n")  # absent: not visible with these dependencies
        if have != want:
            problems.append(f"{fragments.where[symbol]}: {symbol}={want} came out as {have} "
                            "(a dependency is missing or the symbol does not exist)")
    return problems


# --------------------------------------------------------------------------- building


def source_tag(spec: KernelSpec) -> str:
    source = require_source(spec)
    material = {
        "kind": "source",
        "layout": LAYOUT_VERSION,
        "recipe": SOURCE_RECIPE_VERSION,
        "image": source.image,
        "package": source.package,
        "version": source.version,
        "sha256": source.sha256,
        "source_date_epoch": spec.source_date_epoch,
        "arches": {
            arch: {
                "configs": [[p.name, hashlib.sha256(_read_bytes(p)).hexdigest()] for p in files],
                "vmlinux": _vmlinux(spec, arch),
            }
            for arch, files in source.configs.items()
        },
    }
    return f"{source.version}-{hashlib.sha256(hashed_json(material)).hexdigest()[:TAG_HEX]}"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read Kconfig fragment: {exc}") from None


def require_source(spec: KernelSpec) -> KernelSource:
    if spec.source is None:
        raise UsageError(f"{spec.path}: no `source:` section, so there is nothing to build from source")
    return spec.source


def _vmlinux(spec: KernelSpec, arch: str) -> bool:
    return arch == "amd64" and any(a.arch == "amd64" and a.vmlinux for a in spec.arches)


def build_environment(epoch: int, home: Path) -> dict[str, str]:
    """The whole environment make runs in: nothing from the caller's but PATH."""
    stamp = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(epoch))
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        "HOME": str(home),
        "LC_ALL": "C",
        "TZ": "UTC",
        "SOURCE_DATE_EPOCH": str(epoch),
        "KBUILD_BUILD_TIMESTAMP": stamp,
        "KBUILD_BUILD_USER": "pkgtool",
        "KBUILD_BUILD_HOST": "pkgtool",
        "KBUILD_BUILD_VERSION": "1",
        "LOCALVERSION": "",
    }


@dataclass
class _Make:
    tree: Path
    objdir: Path
    arch: str
    cross: str
    env: dict[str, str]
    log_path: Path

    def argv(self, *targets: str, extra: Sequence[str] = ()) -> list[str]:
        return ["make", "-C", str(self.tree), f"O={self.objdir}", f"ARCH={KBUILD_ARCH[self.arch]}",
                f"CROSS_COMPILE={self.cross}", *extra, *targets]

    def run(self, *targets: str, extra: Sequence[str] = (), what: str, capture: bool = False) -> str:
        """Run make, its output streaming into the log; ``capture``: return stdout instead."""
        argv = self.argv(*targets, extra=extra)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            proc = subprocess.run(argv, stdout=subprocess.PIPE if capture else log, stderr=log, env=self.env,
                                  text=True, check=False)
        if proc.returncode != 0:
            raise SourceBuildError(f"{self.arch}: {what} failed (make exit {proc.returncode}): "
                                   f"{_last_error(self.log_path)}; full log: {self.log_path}")
        return proc.stdout if capture else ""


def _last_error(log_path: Path) -> str:
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [ln.strip() for ln in lines if "error" in ln.lower() and not ln.startswith("$ ")]
    pick = errors[-1] if errors else (lines[-1].strip() if lines else "(empty log)")
    return pick[:300]


def compiler_version(arch: str, host: str) -> str:
    gcc = f"{cross_prefix(arch, host)}gcc"
    try:
        out = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise SourceBuildError(f"{gcc} does not run; install gcc-{TRIPLET[arch].replace('_', '-')}") from None
    return out.splitlines()[0].strip() if out else gcc


@dataclass
class SourceArchBuild:
    arch: str
    layout: KernelLayout
    compiler: str
    compile_seconds: float


def build_arch(*, tree: Path, arch: str, fragments: Fragments, workdir: Path, jobs: int, epoch: int,
               vmlinux: bool, host: str, log_path: Path, log: Log = _quiet) -> SourceArchBuild:
    """Configure, compile and lay out one arch's kernel from the unpacked ``tree``."""
    objdir = workdir / "obj"
    objdir.mkdir(parents=True)
    home = workdir / "home"
    home.mkdir()
    make = _Make(tree=tree, objdir=objdir, arch=arch, cross=cross_prefix(arch, host),
                 env=build_environment(epoch, home), log_path=log_path)
    fragment_file = workdir / "fragments.config"
    fragment_file.write_text(fragments.text, encoding="utf-8")

    make.run("allnoconfig", extra=[f"KCONFIG_ALLCONFIG={fragment_file}"], what="make allnoconfig with the fragments")
    config = (objdir / ".config").read_bytes()
    problems = config_problems(fragments, parse_config(config.decode("utf-8", "replace")))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise SourceBuildError(f"{arch}: the kernel configuration does not honour the fragments: "
                               f"{'; '.join(problems[:3])}{more}")
    target, target_file = KERNEL_TARGET[arch]
    log(f"{arch}: compiling {target} and modules with -j{jobs} (log: {log_path})")
    start = time.monotonic()
    make.run(target, "modules", extra=[f"-j{jobs}"], what=f"make {target} modules")
    seconds = time.monotonic() - start
    spool_root = workdir / "spool"
    spool_root.mkdir()
    make.run("modules_install", extra=[f"INSTALL_MOD_PATH={spool_root}", "INSTALL_MOD_STRIP=1", "DEPMOD=true"],
             what="make modules_install")
    release = make.run("kernelrelease", extra=["-s"], what="make kernelrelease", capture=True).strip()
    if not _RELEASE_RE.match(release):
        raise SourceBuildError(f"{arch}: make kernelrelease printed {release[:80]!r}, not a kernel release")
    spool = spool_installed_modules(spool_root, release, source=f"{arch} modules_install")
    layout = write_layout(
        spool, release=release, kernel=(objdir / target_file).read_bytes(), config=config,
        system_map=(objdir / "System.map").read_bytes(), arch=arch, epoch=epoch, vmlinux=vmlinux,
        image=workdir / "image", source=f"{arch}: {target_file}",
    )
    shutil.rmtree(objdir)
    return SourceArchBuild(arch=arch, layout=layout, compiler=compiler_version(arch, host), compile_seconds=seconds)


@dataclass
class SourceArchResult:
    arch: str
    release: str
    compile_seconds: float
    seconds: float
    kernel_bytes: int
    kernel_tar_bytes: int
    layer_bytes: int
    compiler: str
    files: list[str]


@dataclass
class SourceBuildResult:
    ref: str
    tag: str
    skipped: bool
    index_digest: str = ""
    arches: list[SourceArchResult] | None = None
    out_dir: Path | None = None


def build_kernel_from_source(spec: KernelSpec, *, registry: str, arches: Sequence[str] = (), jobs: int = 0,
                             force: bool = False, install_deps: bool = True, out_dir: Path | None = None,
                             push: bool = True, log: Log = _quiet) -> SourceBuildResult:
    """Build the ``source`` section of ``spec`` for every (or each given) arch and push it.

    ``out_dir``: also keep each arch's layout files in ``out_dir/<arch>/`` (for inspection
    or boot tests).  ``push=False`` builds without touching the registry.
    """
    from pkgtool.kernel.fetch import fetch_deb
    from pkgtool.kernel.kernel_build import lock_hint
    from pkgtool.settings import work_cache_dir

    source = require_source(spec)
    for arch in arches:
        if arch not in source.configs:
            raise UsageError(f"{spec.path}: --arch {arch}: source.configs has no {arch} "
                             f"(it has {', '.join(source.arches)})")
    chosen = [a for a in source.arches if not arches or a in arches]
    tag = source_tag(spec)
    ref = f"{registry}/{source.image}:{tag}"
    if push and not force and out_dir is None and rootfs_image.index_complete(
            registry=registry, repository=source.image, tag=tag, arches=chosen):
        log(f"{ref}: already in the registry for {', '.join(chosen)}")
        return SourceBuildResult(ref=ref, tag=tag, skipped=True)

    host = host_arch()
    ensure_packages(required_packages(chosen, host), install=install_deps, log=log)
    fragments = {arch: read_fragments(source.configs[arch]) for arch in chosen}
    jobs = jobs or os.cpu_count() or 1
    logs = work_cache_dir() / "kernel-build"
    logs.mkdir(parents=True, exist_ok=True)

    deb = fetch_deb(package=source.package, arch="all", version=source.version, sha256=source.sha256,
                    where=f"{source.where}: source", lock_hint=lock_hint(spec))
    results: list[SourceArchResult] = []
    images: list[rootfs_image.ArchImage] = []
    with tempfile.TemporaryDirectory(prefix="pkgtool-kernel-src-") as tmp:
        start = time.monotonic()
        tree = extract_source(deb, Path(tmp) / "src")
        log(f"unpacked {source.package}={source.version} in {time.monotonic() - start:.0f}s")
        for arch in chosen:
            start = time.monotonic()
            log_path = logs / f"{tag}-{arch}.log"
            log_path.unlink(missing_ok=True)
            built = build_arch(tree=tree, arch=arch, fragments=fragments[arch], workdir=Path(tmp) / arch,
                               jobs=jobs, epoch=spec.source_date_epoch, vmlinux=_vmlinux(spec, arch),
                               host=host, log_path=log_path, log=log)
            config = rootfs_image.ImageConfig(epoch=spec.source_date_epoch, labels={
                "org.opencontainers.image.title": source.image,
                "org.opencontainers.image.version": source.version,
                "dev.pkgtool.tag": tag,
                "dev.pkgtool.kernel.source": f"{source.package}={source.version}",
                "dev.pkgtool.kernel.release": built.layout.release,
                "dev.pkgtool.kernel.compiler": built.compiler,
            })
            work = Path(tmp) / arch
            flat = work / "layout.tar"
            rootfs_image.directory_tar(built.layout.root, flat, epoch=spec.source_date_epoch)
            image = rootfs_image.image_from_rootfs_tar(flat, arch=arch, config=config, workdir=work / "oci")
            images.append(image)
            if out_dir is not None:
                _keep(built.layout.root, out_dir / arch)
            seconds = time.monotonic() - start
            result = SourceArchResult(
                arch=arch, release=built.layout.release, compile_seconds=built.compile_seconds, seconds=seconds,
                kernel_bytes=(built.layout.root / "kernel").stat().st_size,
                kernel_tar_bytes=(built.layout.root / "kernel.tar").stat().st_size,
                layer_bytes=image.layer.size, compiler=built.compiler, files=built.layout.files,
            )
            results.append(result)
            log(f"{arch}: {result.release}, compile {result.compile_seconds:.0f}s, /kernel "
                f"{result.kernel_bytes / 1e6:.1f} MB, kernel.tar {result.kernel_tar_bytes / 1e6:.2f} MB, "
                f"layer {result.layer_bytes / 1e6:.1f} MB compressed, {seconds:.0f}s in all")
        index_digest = _push(images, registry=registry, repository=source.image, tag=tag) if push else ""
    return SourceBuildResult(ref=ref, tag=tag, skipped=False, index_digest=index_digest, arches=results,
                             out_dir=out_dir)


def _keep(image: Path, dest: Path) -> None:
    """Copy the layout files to ``dest`` (replacing what an earlier build left there)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pkgtool-kernel-", dir=dest.parent))
    for path in sorted(image.iterdir()):
        shutil.copyfile(path, staging / path.name)
    os.replace(staging, dest)


def _push(images: list[rootfs_image.ArchImage], *, registry: str, repository: str, tag: str) -> str:
    """Push the arches built now, keeping the index's other arches (same tag: same inputs)."""
    from pkgtool.oci import mediatypes
    from pkgtool.oci.descriptor import Descriptor
    from pkgtool.oci.registry import RegistryClient

    client = RegistryClient(registry)
    rootfs_image.push_arch_images(client, images, repository=repository, tag=tag)
    descriptors = {i.arch: i.manifest_descriptor for i in images}
    existing = client.get_manifest_or_none(repository, tag)
    if existing is not None and existing.is_index:
        for entry in existing.manifests:
            arch = entry.platform.architecture if entry.platform is not None else ""
            if arch in ARCHES and arch not in descriptors:
                descriptors[arch] = entry
    ordered = [descriptors[a] for a in ARCHES if a in descriptors]
    index = hashed_json({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
                            "manifests": [d.to_json() for d in ordered]})
    client.put_manifest(repository, tag, index, mediatypes.OCI_INDEX)
    return Descriptor.for_bytes(mediatypes.OCI_INDEX, index).digest
