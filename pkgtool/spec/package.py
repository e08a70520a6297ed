"""A package's ``build.yml`` (LinuxKit's ``pkg build`` schema) as a typed, frozen value.

Fields, with LinuxKit's meanings and pkgtool's defaults:

``image`` (required)
    the image name under ``org``; the package is pushed as ``ORG/IMAGE:<tag>``.
``org`` (default ``pkgtool``)
    the repository namespace (LinuxKit's default is ``linuxkit``; ours names this project).
``arches`` (default ``[amd64, arm64, s390x]``)
    target architectures; ``linux/arm64`` platform strings are accepted too.
``dockerfile`` (default ``Dockerfile``)
    relative to the package directory, and must stay inside it (symlinks included).
``network`` (default false)
    false builds with ``force-network-mode=none``: a RUN step cannot download anything.
``disable-cache`` (default false)
    build without BuildKit's cache.
``config``
    image-entry fields of the image YAML (``capabilities``, ``binds``, ``command``, …),
    validated like an image YAML entry and stored as JSON in the ``org.mobyproject.config``
    label.
``extra-sources``
    ``SRC:DST`` strings: ``SRC`` (relative to the package dir; it may leave the package dir
    but not the repository, see :func:`find_repo_root`) is added to the build context at
    ``DST`` (relative, inside the context).
``buildArgs``
    ``KEY=VALUE`` strings (LinuxKit's form) or a ``KEY: VALUE`` mapping.
``tag`` (default ``{{.Hash}}``)
    tag template; ``{{.Hash}}`` is the content hash (:mod:`pkgtool.hashing`).
``depends``
    other package directories (relative to this one) or image references this package
    needs built first (LinuxKit's nested ``docker-images`` form is not supported).
``labels``
    extra image labels.

Unknown keys and wrong types are errors naming ``file:line`` and the field path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pkgtool.arches import ARCHES
from pkgtool.errors import UsageError
from pkgtool.spec.image.model import LABEL
from pkgtool.spec.image.reader import ENTRY_FIELDS, DocReader, kind_of
from pkgtool.yamlload import PathKey, YamlDoc, load_yaml

BUILD_YML = "build.yml"
DEFAULT_ORG = "pkgtool"
# The local BuildKit worker runs the non-native ones through binfmt.
DEFAULT_ARCHES: tuple[str, ...] = ARCHES
DEFAULT_TAG = "{{.Hash}}"
CONFIG_LABEL = LABEL

_KEYS = (
    "image", "org", "arches", "dockerfile", "network", "disable-cache", "config",
    "extra-sources", "buildArgs", "tag", "depends", "labels",
)
# One path component of a repository name (the distribution spec's grammar).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HASH_PLACEHOLDER = re.compile(r"\{\{\s*\.Hash\s*\}\}")
_ARG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Room a rendered tag must leave for "-dirty" and a "-<arch>" suffix within 128 characters.
_TAG_SUFFIX_ROOM = len("-dirty") + 1 + max(len(a) for a in ARCHES)


@dataclass(frozen=True)
class ExtraSource:
    """One ``extra-sources`` entry: ``src`` as written, ``dst`` in the context, ``path`` resolved."""

    src: str
    dst: str
    path: Path


@dataclass(frozen=True)
class PackageSpec:
    """A loaded, validated build.yml with every default filled in."""

    dir: Path
    source: str
    image: str
    org: str = DEFAULT_ORG
    arches: tuple[str, ...] = DEFAULT_ARCHES
    dockerfile: str = "Dockerfile"
    network: bool = False
    disable_cache: bool = False
    config: Mapping[str, Any] | None = None
    extra_sources: tuple[ExtraSource, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tag_template: str = DEFAULT_TAG
    depends: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def name(self) -> str:
        """``ORG/IMAGE``, the repository the package is pushed to (without registry)."""
        return f"{self.org}/{self.image}"

    @property
    def dockerfile_path(self) -> Path:
        return self.dir / self.dockerfile

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(f"linux/{arch}" for arch in self.arches)

    def config_label(self) -> str | None:
        """The ``org.mobyproject.config`` label value: compact JSON with sorted keys."""
        if self.config is None:
            return None
        return json.dumps(_plain(self.config), sort_keys=True, separators=(",", ":"))

    def to_data(self) -> dict[str, Any]:
        """The effective build.yml (defaults applied) as plain JSON-able data, keyed as in
        build.yml.  No absolute paths: it feeds the content hash, which must not depend on
        where the checkout lives."""
        return {
            "image": self.image,
            "org": self.org,
            "arches": list(self.arches),
            "dockerfile": self.dockerfile,
            "network": self.network,
            "disable-cache": self.disable_cache,
            "config": _plain(self.config) if self.config is not None else None,
            "extra-sources": [f"{e.src}:{e.dst}" for e in self.extra_sources],
            "buildArgs": dict(sorted(self.build_args.items())),
            "tag": self.tag_template,
            "depends": list(self.depends),
            "labels": dict(sorted(self.labels.items())),
        }

    def render_tag(self, content_hash: str) -> str:
        """The tag for ``content_hash`` through the ``tag`` template."""
        return _HASH_PLACEHOLDER.sub(content_hash, self.tag_template)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- repository

def find_repo_root(start: Path) -> Path:
    """The repository a package lives in, which bounds ``extra-sources`` and is scanned for
    in-repo dependencies: the nearest ancestor of ``start`` (itself included) holding
    ``.git``; else the nearest holding ``pyproject.toml`` or a ``pkg/`` directory; else
    ``start`` itself.  Found from the filesystem alone, so it works without git."""
    start = start.resolve()
    candidates = [start, *start.parents]
    for directory in candidates:
        if (directory / ".git").exists():
            return directory
    for directory in candidates:
        if (directory / "pyproject.toml").is_file() or (directory / "pkg").is_dir():
            return directory
    return start


def find_packages(root: Path) -> list[Path]:
    """Every directory at or below ``root`` holding a build.yml, sorted; hidden
    directories (``.git``, ``.venv``, …) are not searched."""
    found: list[Path] = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if BUILD_YML in files:
            found.append(Path(current))
    return sorted(found, key=lambda p: os.fsencode(str(p)))


# --------------------------------------------------------------------------- loading

def load_package(
    directory: Path, *, repo_root: Path | None = None, display: str | None = None
) -> PackageSpec:
    """Load and validate ``directory/build.yml``.

    ``display`` is how the directory is named in errors (default: as given).
    """
    directory = Path(directory)
    shown = display or str(directory)
    if not directory.is_dir():
        raise UsageError(f"{shown}: package directory not found")
    build_yml = directory / BUILD_YML
    if not build_yml.is_file():
        raise UsageError(f"{shown}: no {BUILD_YML} (not a package directory)")
    doc = load_yaml(build_yml, display=os.path.join(shown, BUILD_YML))
    root = (repo_root or find_repo_root(directory)).resolve()
    return parse_package(doc, directory=directory.resolve(), repo_root=root, display=shown)


def parse_package(doc: YamlDoc, *, directory: Path, repo_root: Path, display: str) -> PackageSpec:
    """Validate a parsed build.yml of the package in ``directory`` (already resolved)."""
    r = DocReader(doc)
    if doc.data is None:
        raise doc.error((), "empty build.yml: 'image' is required")
    data = r.mapping((), doc.data, _KEYS)
    if "image" not in data:
        raise doc.error((), "'image' is required")
    image = _name(doc, ("image",), data["image"])
    org = _name(doc, ("org",), data["org"]) if "org" in data else DEFAULT_ORG
    arches = _arches(doc, data["arches"]) if "arches" in data else DEFAULT_ARCHES
    dockerfile = _dockerfile(doc, data.get("dockerfile", "Dockerfile"), directory, display)
    network = r.value(("network",), data["network"], "bool") if "network" in data else False
    disable_cache = (
        r.value(("disable-cache",), data["disable-cache"], "bool") if "disable-cache" in data else False
    )
    config = None
    if "config" in data:
        checked = r.mapping(("config",), data["config"], tuple(ENTRY_FIELDS))
        r.image_config(("config",), checked)  # type and schema checks, with file:line
        config = MappingProxyType(dict(checked))
    extra = tuple(
        _extra_source(doc, ("extra-sources", i), item, directory, repo_root)
        for i, item in enumerate(r.list(("extra-sources",), data.get("extra-sources") or []))
    )
    build_args = _build_args(doc, data["buildArgs"]) if "buildArgs" in data else {}
    tag = _tag_template(doc, data["tag"]) if "tag" in data else DEFAULT_TAG
    depends = r.value(("depends",), data["depends"], "strings") if "depends" in data else ()
    for i, dep in enumerate(depends):
        if not dep.strip():
            raise doc.error(("depends", i), "empty dependency")
    labels = r.value(("labels",), data["labels"], "mapstring") if "labels" in data else {}
    return PackageSpec(
        dir=directory,
        source=doc.source,
        image=image,
        org=org,
        arches=arches,
        dockerfile=dockerfile,
        network=network,
        disable_cache=disable_cache,
        config=config,
        extra_sources=extra,
        build_args=MappingProxyType(dict(sorted(build_args.items()))),
        tag_template=tag,
        depends=tuple(depends),
        labels=MappingProxyType(dict(sorted(labels.items()))),
    )


def _name(doc: YamlDoc, path: PathKey, value: Any) -> str:
    if not isinstance(value, str):
        raise doc.error(path, f"expected a string, got {kind_of(value)}")
    if not _NAME_RE.match(value):
        raise doc.error(path, f"invalid repository name {value!r} (lowercase letters, digits, '.', '_', '-' and '/')")
    return value


def normalize_arch(value: str) -> str | None:
    """``arm64`` or ``linux/arm64`` -> ``arm64``; None when it is not a valid arch."""
    arch = value.removeprefix("linux/")
    return arch if arch in ARCHES else None


def _arches(doc: YamlDoc, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise doc.error(("arches",), f"expected a list, got {kind_of(value)}")
    if not value:
        raise doc.error(("arches",), "must name at least one arch")
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise doc.error(("arches", i), f"expected a string, got {kind_of(item)}")
        arch = normalize_arch(item)
        if arch is None:
            raise doc.error(("arches", i), f"unknown arch {item!r} (valid: {', '.join(ARCHES)})")
        if arch in out:
            raise doc.error(("arches", i), f"duplicate arch {arch!r}")
        out.append(arch)
    return tuple(out)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _dockerfile(doc: YamlDoc, value: Any, directory: Path, display: str) -> str:
    path: PathKey = ("dockerfile",)
    if not isinstance(value, str) or not value:
        raise doc.error(path, f"expected a file name, got {kind_of(value)}")
    relative = os.path.normpath(value)
    if os.path.isabs(value) or relative == ".." or relative.startswith("../"):
        raise doc.error(path, f"{value!r} is outside the package directory")
    full = directory / relative
    if not full.exists():
        shown = os.path.join(display, relative)
        if path in doc.lines:  # named explicitly: point at the line
            raise doc.error(path, f"{shown}: file not found")
        raise UsageError(f"{shown}: file not found (every package needs a Dockerfile)")
    if not _inside(full.resolve(), directory):
        raise doc.error(path, f"{value!r} resolves outside the package directory (through a symlink)")
    if not full.is_file():
        raise doc.error(path, f"{value!r} is not a regular file")
    return relative


def _extra_source(doc: YamlDoc, path: PathKey, value: Any, directory: Path, repo_root: Path) -> ExtraSource:
    if not isinstance(value, str):
        raise doc.error(path, f"expected 'SRC:DST', got {kind_of(value)}")
    src, sep, dst = value.partition(":")
    if not sep or not src or not dst:
        raise doc.error(path, f"expected 'SRC:DST', got {value!r}")
    if os.path.isabs(src):
        raise doc.error(path, f"source {src!r} must be relative to the package directory")
    full = (directory / src).resolve()
    if not _inside(full, repo_root):
        raise doc.error(path, f"source {src!r} is outside the repository ({repo_root})")
    if not full.exists():
        raise doc.error(path, f"source {src!r} does not exist")
    dst_clean = os.path.normpath(dst.lstrip("/"))
    if dst_clean in (".", "..") or dst_clean.startswith("../"):
        raise doc.error(path, f"destination {dst!r} must be a path inside the build context")
    return ExtraSource(src=src, dst=dst_clean, path=full)


def _arg_value(doc: YamlDoc, path: PathKey, value: Any) -> str:
    # Integers are unambiguous; booleans are not (YAML 1.1 reads yes/on/True as true).
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise doc.error(path, f"expected a string, got {kind_of(value)}")


def _build_args(doc: YamlDoc, value: Any) -> dict[str, str]:
    path: PathKey = ("buildArgs",)
    out: dict[str, str] = {}
    if isinstance(value, dict):
        items = [((*path, k), k, _arg_value(doc, (*path, k), v)) for k, v in value.items()]
    elif isinstance(value, list):
        items = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or "=" not in item:
                raise doc.error((*path, i), f"expected 'KEY=VALUE', got {item!r}")
            key, _, val = item.partition("=")
            items.append(((*path, i), key, val))
    else:
        raise doc.error(path, f"expected a list of KEY=VALUE or a mapping, got {kind_of(value)}")
    for where, key, val in items:
        if not _ARG_NAME_RE.match(key):
            raise doc.error(where, f"invalid build arg name {key!r}")
        if key in out:
            raise doc.error(where, f"duplicate build arg {key!r}")
        out[key] = val
    return out


def _tag_template(doc: YamlDoc, value: Any) -> str:
    path: PathKey = ("tag",)
    if not isinstance(value, str):
        raise doc.error(path, f"expected a string, got {kind_of(value)}")
    if not _HASH_PLACEHOLDER.search(value):
        raise doc.error(path, "the tag template must contain {{.Hash}}")
    sample = _HASH_PLACEHOLDER.sub("0" * 40, value)
    if "{{" in sample or "}}" in sample:
        raise doc.error(path, "only {{.Hash}} can be used in the tag template")
    if not _TAG_RE.match(sample) or len(sample) + _TAG_SUFFIX_ROOM > 128:
        raise doc.error(path, f"{value!r} does not give a valid tag ([A-Za-z0-9_.-], at most 128 characters with suffixes)")
    return value


# --------------------------------------------------------------------------- Dockerfile refs

_VAR_RE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-+])(?P<word>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def _substitute(text: str, env: Mapping[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain")
        op = m.group("op")
        value = env.get(name)
        if op in (":-", "-"):
            unset = value is None or (op == ":-" and value == "")
            return m.group("word") if unset else str(value)
        if op in (":+", "+"):
            set_ = value is not None and (op == "+" or value != "")
            return m.group("word") if set_ else ""
        return value or ""

    return _VAR_RE.sub(one, text)


def _logical_lines(text: str) -> list[str]:
    """Instructions with continuation lines joined and comments dropped; honours the
    ``# escape=`` parser directive."""
    escape = "\\"
    lines = text.splitlines()
    for line in lines:
        m = re.match(r"^\s*#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$", line)
        if not m:
            break
        if m.group(1).lower() == "escape" and m.group(2) in ("\\", "`"):
            escape = m.group(2)
    out: list[str] = []
    current = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if not current and not stripped:
            continue
        if stripped.endswith(escape):
            current += stripped[:-1] + " "
            continue
        current += stripped
        out.append(current)
        current = ""
    if current.strip():
        out.append(current)
    return out


def dockerfile_from_refs(
    text: str, *, build_args: Mapping[str, str] | None = None, target_arch: str | None = None
) -> list[str]:
    """Image references a Dockerfile builds from, in order, without duplicates.

    Counts ``FROM`` images (``--platform=`` flags and ``AS name`` understood) and
    ``COPY --from=``/``RUN --mount=…,from=`` images, but not earlier stage names, stage
    indexes or ``scratch``.  ``$VAR``/``${VAR}``/``${VAR:-x}`` in them are expanded from the
    ``ARG``s declared before the first FROM, overridden by ``build_args`` as docker does
    (only declared args count), plus ``TARGETARCH``/``TARGETOS``/``TARGETPLATFORM`` when
    ``target_arch`` is given.
    """
    args: dict[str, str] = {}
    if target_arch:
        args.update(TARGETARCH=target_arch, TARGETOS="linux", TARGETPLATFORM=f"linux/{target_arch}")
    overrides = dict(build_args or {})
    stages: set[str] = set()
    refs: list[str] = []
    seen_from = False

    def add(ref: str) -> None:
        ref = _substitute(ref, args).strip()
        if not ref or ref.lower() == "scratch" or ref.lower() in stages or ref.isdigit():
            return
        if ref not in refs:
            refs.append(ref)

    for line in _logical_lines(text):
        word, _, rest = line.partition(" ")
        instruction = word.upper()
        tokens = rest.split()
        if instruction == "ARG" and not seen_from:
            for token in tokens:
                name, eq, default = token.partition("=")
                value = overrides.get(name, default.strip("\"'") if eq else None)
                if value is not None:
                    args[name] = value
        elif instruction == "FROM":
            seen_from = True
            positional = [t for t in tokens if not t.startswith("--")]
            if not positional:
                continue
            add(positional[0])
            if len(positional) >= 3 and positional[1].lower() == "as":
                stages.add(positional[2].lower())
        elif instruction in ("COPY", "ADD", "RUN"):
            for token in tokens:
                if not token.startswith("--"):
                    break
                if token.startswith("--from="):
                    add(token.removeprefix("--from="))
                elif token.startswith("--mount="):
                    for option in token.removeprefix("--mount=").split(","):
                        if option.startswith("from="):
                            add(option.removeprefix("from="))
    return refs


def merge_build_args(spec: PackageSpec, overrides: Mapping[str, str] | None) -> dict[str, str]:
    """The spec's buildArgs with command-line ``--build-arg`` values on top, sorted."""
    merged = dict(spec.build_args)
    merged.update(overrides or {})
    return dict(sorted(merged.items()))


def parse_build_arg_flags(values: Sequence[str]) -> dict[str, str]:
    """``--build-arg K=V`` flags as a mapping (``K`` alone takes the environment's value)."""
    out: dict[str, str] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not _ARG_NAME_RE.match(key):
            raise UsageError(f"--build-arg {item!r}: expected KEY=VALUE")
        if not eq:
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out
