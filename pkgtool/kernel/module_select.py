"""Which of a Debian kernel's modules a kernel image keeps: kernel.yml's ``modules:`` rule.

Input is the whole tree's dependency graph (``modules.dep`` from a first depmod run: module
path -> the modules it needs) and the list of modules built into the kernel image
(``modules.builtin``), all as paths relative to ``lib/modules/<release>/``.  The rule, also
documented in :mod:`pkgtool.kernel.kernel_yml`:

* the *roots* are the modules matching an ``include`` glob (every module when there is no
  ``include``), less those matching an ``exclude`` glob;
* the kept set is the roots plus everything they depend on, transitively, excluded or not:
  leaving out a dependency would only make a kept module fail to load;
* an ``include`` glob must match a module or a built-in one, else it is a typo or a kernel
  that lacks the feature, and the build stops naming the kernel.yml line.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pkgtool.errors import UsageError
from pkgtool.kernel.kernel_yml import ModuleGlob


@dataclass(frozen=True)
class Selection:
    keep: frozenset[str]
    builtin_only: tuple[str, ...]  # include globs satisfied only by built-in modules


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """``modules.dep`` as module -> direct dependencies."""
    needs: dict[str, list[str]] = {}
    for line in text.splitlines():
        module, sep, deps = line.partition(":")
        if sep:
            needs[module.strip()] = deps.split()
    return needs


def _matches(names: Iterable[str], pattern: str) -> list[str]:
    return [name for name in names if fnmatch.fnmatchcase(name, pattern)]


def select_modules(needs: Mapping[str, Sequence[str]], builtin: Iterable[str], *,
                   include: Sequence[ModuleGlob], exclude: Sequence[str], kernel: str) -> Selection:
    """The modules to keep; ``kernel`` names the package (and arch) in errors."""
    builtin = set(builtin)
    if include:
        roots: set[str] = set()
        builtin_only = []
        for glob in include:
            found = _matches(needs, glob.pattern)
            if not found and not _matches(builtin, glob.pattern):
                raise UsageError(f"{glob.where}: {glob.pattern!r} matches no module of {kernel}, "
                                 "neither a loadable one nor one built into the kernel")
            if not found:
                builtin_only.append(glob.pattern)
            roots.update(found)
    else:
        roots, builtin_only = set(needs), []
    roots = {m for m in roots if not any(fnmatch.fnmatchcase(m, p) for p in exclude)}
    keep: set[str] = set()
    todo = sorted(roots)
    while todo:
        module = todo.pop()
        if module not in keep:
            keep.add(module)
            todo.extend(needs.get(module, ()))
    return Selection(keep=frozenset(keep), builtin_only=tuple(builtin_only))
