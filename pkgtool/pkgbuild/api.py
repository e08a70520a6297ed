"""The package-build entry points used by the CLI, ``update-hashes`` and ``verify --rebuild``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pkgtool.errors import UsageError
from pkgtool.pkgbuild.plan import (
    BuildOptions,
    Target,
    check_dependency_pins,
    check_local_dependencies,
    check_pushable,
    plan_targets,
)
from pkgtool.pkggraph import PackageGraph, load_graph
from pkgtool.progress import Progress
from pkgtool.spec.package import find_packages

if TYPE_CHECKING:
    from pkgtool.oci.layout import Layout
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.pkgbuild.run import PackageResult
    from pkgtool.sign.signer import Signer


@dataclass
class Plan:
    graph: PackageGraph
    targets: list[Target]
    options: BuildOptions
    client: RegistryClient
    layout: Layout

    @property
    def needs_builder(self) -> bool:
        return any(t.build for t in self.targets)


def package_dirs(paths: Sequence[str], *, all_under: str | None) -> list[Path]:
    """The package directories named on the command line, or every one under ``--all DIR``."""
    dirs = [Path(p) for p in paths]
    if all_under is not None:
        root = Path(all_under)
        if not root.is_dir():
            raise UsageError(f"--all {all_under}: not a directory")
        found = find_packages(root)
        if not found:
            raise UsageError(f"--all {all_under}: no build.yml below it")
        dirs += [d for d in found if d not in dirs]
    if not dirs:
        raise UsageError("name at least one package directory (or --all DIR)")
    return dirs


def make_plan(dirs: Sequence[Path], options: BuildOptions, *, cache_dir: Path) -> Plan:
    """Load the graph, refuse what cannot be built, and ask the registry what is missing."""
    from pkgtool.oci.layout import Layout
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.settings import work_cache_dir

    graph = load_graph(list(dirs), build_args=options.build_args, stat_cache_dir=work_cache_dir() / "contenthash")
    check_pushable(graph, options)
    check_dependency_pins(graph, options)
    client = RegistryClient(options.registry)
    layout = Layout(cache_dir)
    if options.push:
        targets = plan_targets(graph, options, client, where="registry")
    else:
        layout.ensure()
        targets = plan_targets(graph, options, layout, where="cache")
        check_local_dependencies(graph, targets, client)
    return Plan(graph=graph, targets=targets, options=options, client=client, layout=layout)


def execute(plan: Plan, *, progress: Progress, signer: Signer | None = None) -> list[PackageResult]:
    """Build and publish what the plan says is missing, signing it with ``signer`` if given.
    BuildKit (and grpc) is only touched when something has to be built."""
    from pkgtool.pkgbuild.builder_pool import BuilderPool
    from pkgtool.pkgbuild.builders_config import builder_assignments
    from pkgtool.pkgbuild.run import BuildRun

    options = plan.options
    if plan.needs_builder or any(t.index_missing for t in plan.targets):
        plan.layout.ensure()
    assignments = options.builders
    if assignments is None:
        assignments = builder_assignments(None, tls=options.builder_tls)
    # Nothing connects until a solve (or the platform check) needs a builder.
    pool = BuilderPool(assignments, default=options.builder, default_tls=options.builder_tls)
    run = BuildRun(plan.graph, options, progress=progress, layout=plan.layout, client=plan.client,
                   builders=pool, signer=signer)
    try:
        if plan.needs_builder:
            run.check_platforms(plan.targets)
    except BaseException:
        run.close()
        raise
    return run.run(plan.targets)
