"""Running a build: packages in dependency order, arches in parallel, all-or-nothing pushes.

* Packages are built level by level (:meth:`PackageGraph.levels`): a package starts only
  when everything it depends on is in the registry; packages of one level run at once, up
  to ``--jobs``, and each runs its arches at once.
* A package's arches are pushed only after all of them built, and its index only after all
  of them are pushed, so a failure or Ctrl-C leaves nothing half-published.
* The first failure (or Ctrl-C) cancels every running solve; the error that caused it is
  the one reported.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pkgtool.errors import PkgtoolError
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.reference import parse_reference
from pkgtool.pkgbuild import REGISTRY_ARG
from pkgtool.pkgbuild.plan import BuildOptions, Target, display, local_name
from pkgtool.pkggraph import Package, PackageGraph
from pkgtool.progress import Progress
from pkgtool.spec.package import dockerfile_from_refs, merge_build_args

if TYPE_CHECKING:
    from pkgtool.oci.layout import Layout
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.pkgbuild.arch import ArchBuild, ArchCache
    from pkgtool.pkgbuild.builder_pool import BuilderPool
    from pkgtool.sign.signer import Signer

CONFIG_LABEL = "org.mobyproject.config"
# How long Ctrl-C waits for running builds to acknowledge their cancellation.
CANCEL_GRACE_SECONDS = 20.0


class BuildInterrupted(PkgtoolError):
    """Ctrl-C during a build: every solve was cancelled and nothing more was pushed."""

    exit_code = 130


@dataclass
class PackageResult:
    """What happened to one package in this run."""

    package: Package
    ref: str  # REGISTRY/ORG/IMAGE:TAG
    digest: str = ""  # the index digest ("" with --no-index: see arch_refs)
    arch_refs: dict[str, str] = field(default_factory=dict)  # --no-index: arch -> REF-ARCH@DIGEST pushed
    built: tuple[str, ...] = ()
    manifests: dict[str, Descriptor] = field(default_factory=dict)  # arch -> manifest
    arch_builds: dict[str, ArchBuild] = field(default_factory=dict)
    base_images: dict[str, str] = field(default_factory=dict)  # ref as written -> digest
    build_args: dict[str, str] = field(default_factory=dict)
    started: datetime.datetime | None = None
    finished: datetime.datetime | None = None
    invocation_id: str = ""

    @property
    def pinned(self) -> str:
        return f"{self.ref}@{self.digest}" if self.digest else self.ref


def image_labels(package: Package) -> dict[str, str]:
    """Labels set on every arch's config at re-pack time: build.yml's ``labels`` (where a
    package names its ``org.opencontainers.image.source``), the version (the clean tag), and
    build.yml's ``config`` as LinuxKit's ``org.mobyproject.config``.

    Nothing from git goes into the image.  A revision label would give every commit a new
    digest for unchanged content, a clone URL would make digests depend on where the
    checkout came from, and a dirty work tree could never produce the digest its committed
    form will: the digest pins that ``update-hashes`` writes would all go stale.  The source
    repository and revision are recorded in the signed SLSA provenance instead, which is
    where an auditor looks for them.
    """
    labels = dict(package.spec.labels)
    labels["org.opencontainers.image.version"] = package.clean_tag
    config = package.spec.config_label()
    if config is not None:
        labels[CONFIG_LABEL] = config
    return labels


def solve_build_args(package: Package, options: BuildOptions) -> dict[str, str]:
    """build.yml's buildArgs, ``--build-arg`` on top, and the registry for FROM lines."""
    args = merge_build_args(package.spec, options.build_args)
    args.setdefault(REGISTRY_ARG, options.registry)
    return args


def resolve_base_images(package: Package, args: Mapping[str, str], client: RegistryClient) -> dict[str, str]:
    """Every image the Dockerfile pulls (for any of its arches), resolved to a digest now.

    Fails before any solve starts when one is missing, with the reference as written.
    """
    text = package.spec.dockerfile_path.read_text(encoding="utf-8", errors="replace")
    refs: list[str] = []
    for arch in package.spec.arches:
        for found_ref in dockerfile_from_refs(text, build_args=args, target_arch=arch):
            if found_ref not in refs:
                refs.append(found_ref)
    resolved: dict[str, str] = {}
    for written in refs:
        ref = parse_reference(written)
        found = client.for_registry(ref.registry).head_manifest(ref.repository, ref.locator)
        if found is None:
            raise PkgtoolError(f"{package.spec.dockerfile_path}: FROM {written}: not found in registry {ref.registry}")
        resolved[written] = found.digest
    return resolved


class BuildRun:
    """One ``pkgtool build`` invocation's execution (after planning)."""

    def __init__(self, graph: PackageGraph, options: BuildOptions, *, progress: Progress, layout: Layout,
                 client: RegistryClient, builders: BuilderPool, signer: Signer | None = None) -> None:
        self.graph = graph
        self.signer = signer
        self.options = options
        self.progress = progress
        self.layout = layout
        self.client = client
        self.builders = builders
        self.cancel = threading.Event()
        self._failure: BaseException | None = None
        self._failure_lock = threading.Lock()

    def close(self) -> None:
        self.builders.close()

    def check_platforms(self, targets: Sequence[Target]) -> None:
        """Reach every builder this run needs, and check each offers its platforms, before
        anything is built: an unreachable arm64 host fails the run now, naming it."""
        self.builders.check_platforms(a for t in targets for a in t.build)

    # -- running ------------------------------------------------------------------------
    def run(self, targets: Sequence[Target]) -> list[PackageResult]:
        by_dir = {t.dir: t for t in targets}
        results: dict[Path, PackageResult] = {}
        try:
            for level in self.graph.levels():
                todo = [by_dir[p.dir] for p in level if p.dir in by_dir]
                self._run_level(todo, results)
        finally:
            self.close()
        return [results[t.dir] for t in targets if t.dir in results]

    def _run_level(self, todo: Sequence[Target], results: dict[Path, PackageResult]) -> None:
        jobs = max(1, self.options.jobs)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="pkg") as pool:
            futures = {pool.submit(self._one_package, t): t for t in todo}
            try:
                pending = set(futures)
                while pending:
                    # A timeout keeps the main thread responsive to Ctrl-C.
                    done, pending = concurrent.futures.wait(pending, timeout=0.2)
                    for future in done:
                        try:
                            results[futures[future].dir] = future.result()
                        except BaseException as exc:
                            self._fail(exc)
            except KeyboardInterrupt:
                self.cancel.set()
                self.progress.message("interrupted: cancelling every running build")
                # Ctrl-C must give the terminal back: a thread that does not wind down in
                # time (a daemon call that ignores cancellation) is left behind, and the
                # command line exits without waiting for it (pkgtool.cli).
                _finished, stuck = concurrent.futures.wait(futures, timeout=CANCEL_GRACE_SECONDS)
                abandoned = f"; {len(stuck)} still winding down were abandoned" if stuck else ""
                raise BuildInterrupted(f"interrupted: every running build was cancelled{abandoned}; "
                                       "nothing of the unfinished packages was pushed") from None
        if self._failure is not None:
            raise self._failure

    def _fail(self, exc: BaseException) -> None:
        from pkgtool.buildkit import BuildCancelled

        with self._failure_lock:
            # Cancellations we caused ourselves are not the story; the first real error is.
            if self._failure is None or (isinstance(self._failure, BuildCancelled) and not isinstance(exc, BuildCancelled)):
                self._failure = exc
        self.cancel.set()

    def _one_package(self, target: Target) -> PackageResult:
        package = target.package
        name = display(self.graph, package)
        ref = f"{self.options.registry}/{package.spec.name}:{package.tag}"
        result = PackageResult(package=package, ref=ref, manifests=dict(target.reuse))
        if target.up_to_date:
            if target.wanted:
                result.digest = self._current_digest(package)
            self.progress.message(f"{package.ref} is up to date ({', '.join(target.wanted) or 'no arch requested'})",
                                  group=name)
            if self.signer is not None and self.options.push and target.wanted and result.digest:
                self._complete_signatures(target, result)
            return result
        if self.cancel.is_set():
            raise BuildInterrupted(f"{name}: not started")
        result.started = datetime.datetime.now(datetime.UTC)
        result.invocation_id = secrets.token_hex(16)
        args = solve_build_args(package, self.options)
        result.build_args = {k: v for k, v in args.items() if k != REGISTRY_ARG}
        if target.build:
            result.base_images = resolve_base_images(package, args, self.client)
            self.progress.message(f"building {package.ref} for {', '.join(target.build)} ({target.reason})", group=name)
            builds = self._build_arches(target, args)
            result.arch_builds = builds
            result.built = target.build
            for arch, build in builds.items():
                result.manifests[arch] = build.image.manifest
        if self.cancel.is_set():
            raise BuildInterrupted(f"{name}: cancelled before pushing")
        index = self._publish(target, result)
        result.finished = datetime.datetime.now(datetime.UTC)
        took = (result.finished - result.started).total_seconds()
        if index is None:
            # --no-index: each arch stands alone until `pkgtool manifest` merges them.
            for arch in target.build:
                manifest = result.manifests[arch]
                result.arch_refs[arch] = f"{ref}-{arch}@{manifest.digest}"
                if self.signer is not None:
                    self._sign(target, result, manifest, manifests={arch: manifest}, arches=(arch,))
                self.progress.message(f"{result.arch_refs[arch]} ({took:.1f}s; no index: --no-index)", group=name)
            return result
        result.digest = index.digest
        if self.signer is not None and self.options.push:
            self._sign(target, result, index, manifests=result.manifests, arches=target.build or target.wanted)
        self.progress.message(f"{result.pinned} ({took:.1f}s)", group=name)
        return result

    def _complete_signatures(self, target: Target, result: PackageResult) -> None:
        """``--sign`` on an up-to-date package: sign and attest what this signer has not yet.

        The image's content hash fixes its inputs, so the provenance records them as for a
        build; its ``internalParameters`` say that this run found the image already pushed
        (``attestedWithoutRebuild``) rather than built it.
        """
        package = target.package
        index = self.client.head_manifest(package.spec.name, package.tag)
        if index is None:
            return
        now = datetime.datetime.now(datetime.UTC)
        result.started = result.finished = now
        args = solve_build_args(package, self.options)
        result.build_args = {k: v for k, v in args.items() if k != REGISTRY_ARG}
        result.base_images = resolve_base_images(package, args, self.client)
        self._sign(target, result, index, manifests=result.manifests, arches=target.wanted, complete=True)

    def _sign(self, target: Target, result: PackageResult, root: Descriptor, *,
              manifests: Mapping[str, Descriptor], arches: Sequence[str], complete: bool = False) -> None:
        """Sign ``root`` (the index, or with --no-index one arch's manifest) and
        ``manifests`` under it, with provenance naming the platforms of ``arches``; with
        ``complete``, only what this signer has not attached yet."""
        from pkgtool.pkgbuild.build_facts import build_info
        from pkgtool.sign.publish import sign_package

        package = target.package
        assert self.signer is not None and result.started is not None and result.finished is not None
        info = build_info(self.graph, package, arches=arches, build_args=result.build_args,
                          base_images=result.base_images, started=result.started, finished=result.finished,
                          extra={"attestedWithoutRebuild": "true"} if complete else None)
        name = display(self.graph, package)
        report = sign_package(self.client, repository=package.spec.name, index=root, manifests=manifests,
                              build=info, signer=self.signer, layout_cache=self.layout, complete=complete)
        if complete and report.added == 0:
            self.progress.message(f"{result.ref}@{root.digest} is already signed and attested by {report.signer}",
                                  group=name)
            return
        self.progress.message(f"signed {result.ref}@{root.digest}: {report.added} item(s) attached by {report.signer}",
                              group=name)

    def _current_digest(self, package: Package) -> str:
        if self.options.push:
            found = self.client.head_manifest(package.spec.name, package.tag)
        else:
            found = self.layout.resolve(local_name(self.options.registry, package))
        return found.digest if found is not None else ""

    def _build_arches(self, target: Target, args: Mapping[str, str]) -> dict[str, ArchBuild]:
        from pkgtool.buildkit.status import progress_callback
        from pkgtool.pkgbuild.arch import build_arch
        from pkgtool.pkgbuild.context import build_context

        package = target.package
        labels = image_labels(package)
        context = build_context(package.spec)  # once: every arch sends the same tree

        def one(arch: str) -> ArchBuild:
            # Each arch on its own builder: an unreachable one fails this arch, naming it.
            builder = self.builders.get(arch)
            label = self.builders.label(arch)
            group = f"{package.spec.image} {arch} on {label}"
            cache = self._arch_cache(package, arch, builder.address.kind, group)
            built = build_arch(builder, package, arch, layout=self.layout, context=context, build_args=args,
                               labels=labels, on_status=progress_callback(self.progress, group), cancel=self.cancel,
                               cache=cache, builder_label=label)
            if built.cache_image:
                self.progress.message(f"build cache pushed to {built.cache_image}", group=group)
            return built

        out: dict[str, ArchBuild] = {}
        errors: list[BaseException] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(target.build), thread_name_prefix="arch") as pool:
            futures = {pool.submit(one, arch): arch for arch in target.build}
            for future in concurrent.futures.as_completed(futures):
                try:
                    out[futures[future]] = future.result()
                except BaseException as exc:
                    errors.append(exc)
                    self._show_failure(exc)
                    self.cancel.set()  # the other arches (and packages) stop too
        if errors:
            real = [e for e in errors if type(e).__name__ != "BuildCancelled"]
            raise (real or errors)[0]
        return {arch: out[arch] for arch in target.build}

    def _arch_cache(self, package: Package, arch: str, builder_kind: str, group: str) -> ArchCache | None:
        """--cache-from / --cache-to for one solve (see :mod:`pkgtool.pkgbuild.cache`)."""
        from pkgtool.pkgbuild.arch import ArchCache, InlineCacheTarget
        from pkgtool.pkgbuild.cache import export_entries, import_entries

        options = self.options
        if not options.cache_from and options.cache_to is None:
            return None
        imports, missing = import_entries(options.cache_from, self.client, package_name=package.spec.name, arch=arch)
        for ref in missing:
            self.progress.message(f"no build cache at {ref} yet", group=group)
        exports = []
        inline = None
        if options.cache_to is not None:
            location = options.cache_to
            exports = export_entries(location, builder_kind=builder_kind, package_name=package.spec.name, arch=arch)
            if builder_kind == "dockerd":
                inline = InlineCacheTarget(self.client.for_registry(location.registry),
                                           location.repository(package.spec.name), location.tag(arch))
        return ArchCache(imports=imports, exports=exports, inline_target=inline)

    def _show_failure(self, exc: BaseException) -> None:
        from pkgtool.buildkit import BuildError

        if isinstance(exc, BuildError) and exc.log_tail:
            lines = [line for line in exc.log_tail if line.strip()][-12:]
            self.progress.message(f"{exc.platform}: step {exc.step!r} failed; its last output:\n    "
                                  + "\n    ".join(lines))

    def _publish(self, target: Target, result: PackageResult) -> Descriptor | None:
        """Push the arches built, then the index (None: --no-index, no index written)."""
        from pkgtool.pkgbuild.push import push_arch_manifest, push_index, store_local

        package = target.package
        if not self.options.push:
            names = {a: local_name(self.options.registry, package, a) for a in result.manifests}
            return store_local(self.layout, name=local_name(self.options.registry, package),
                               ours=result.manifests, arch_names=names)
        for arch in target.build:
            if self.cancel.is_set():
                raise BuildInterrupted(f"{display(self.graph, package)}: cancelled before pushing")
            push_arch_manifest(self.client, self.layout, repository=package.spec.name, tag=package.tag,
                               arch=arch, manifest=result.manifests[arch])
        if not self.options.push_index:
            return None
        return push_index(self.client, repository=package.spec.name, tag=package.tag, ours=result.manifests,
                          arches=package.spec.arches)


def describe(targets: Sequence[Target], graph: PackageGraph) -> list[str]:
    """``--dry-run`` lines: what would be built, and why."""
    lines = []
    for target in targets:
        name = display(graph, target.package)
        if target.up_to_date:
            lines.append(f"{name}: {target.package.ref}: up to date")
        elif not target.build:
            lines.append(f"{name}: {target.package.ref}: would push the index ({target.reason})")
        else:
            lines.append(f"{name}: {target.package.ref}: would build {', '.join('linux/' + a for a in target.build)} ({target.reason})")
    return lines


def json_ready(result: PackageResult) -> dict[str, Any]:
    """A result as plain data (``--progress=json`` summary lines)."""
    return {
        "package": str(result.package.dir),
        "ref": result.ref,
        "digest": result.digest,
        "built": list(result.built),
        "manifests": {arch: d.digest for arch, d in sorted(result.manifests.items())},
        "builders": {arch: b.builder for arch, b in sorted(result.arch_builds.items())},
        **({"arch_refs": dict(sorted(result.arch_refs.items()))} if result.arch_refs else {}),
    }
