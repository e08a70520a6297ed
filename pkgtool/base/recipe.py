"""``pkg/base/base.yml``: the bootstrap recipe of the Debian base image.

Example (every key is required unless marked optional)::

    image: pkgtool/base                # ORG/IMAGE in the registry
    suite: bookworm
    variant: minbase                   # mmdebstrap --variant
    source_date_epoch: 1700000000      # fixed: makes the bootstrap bit-reproducible
    arches: [amd64, arm64, s390x]
    include: []                        # optional: extra packages (mmdebstrap --include)
    include_for:                       # optional: extra packages for some arches only
      amd64: [open-vm-tools]           #   (a package Debian does not build for every arch)
    dpkg_options:                      # optional: passed as --dpkgopt=..., in order
      - path-exclude=/usr/share/man/*
    remove:                            # optional: absolute paths or globs deleted after the
      - /etc/ssh/ssh_host_*            #   bootstrap (files maintainer scripts fill with random
                                       #   bytes, which would break bit-reproducibility)
    config:                            # optional: the image config
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
      cmd: ["/bin/sh"]

The tag is a hash over this file's parsed content *and* every lock file, so editing either
gives a new tag (see :func:`pkgtool.base.base_build.base_tag`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkgtool.arches import ARCHES
from pkgtool.yamlload import YamlDoc, load_yaml

_KEYS = {"image", "suite", "variant", "source_date_epoch", "arches", "include", "include_for",
         "dpkg_options", "remove", "config"}
_CONFIG_KEYS = {"env", "cmd"}
_IMAGE_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+$")
_WORD_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_DPKGOPT_RE = re.compile(r"^(path-exclude|path-include)=/[^\s]*$")
# Absolute, no "..", and only characters that are safe unquoted in the hook's shell command
# (``*``, ``?`` and ``[...]`` stay live as globs; everything else is literal).
_REMOVE_RE = re.compile(r"^(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._+*?\[\]-]+)+$")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class BaseRecipe:
    path: Path
    image: str
    suite: str
    variant: str
    source_date_epoch: int
    arches: tuple[str, ...]
    include: tuple[str, ...] = ()
    include_for: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dpkg_options: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    env: tuple[str, ...] = (DEFAULT_PATH,)
    cmd: tuple[str, ...] = ("/bin/sh",)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def lock_path(self, arch: str) -> Path:
        return self.path.parent / f"versions.{arch}"

    def includes(self, arch: str) -> tuple[str, ...]:
        """The packages ``mmdebstrap --include`` installs for ``arch``: common ones, then its own."""
        return (*self.include, *self.include_for.get(arch, ()))


def _strings(doc: YamlDoc, value: Any, path: tuple[str | int, ...], pattern: re.Pattern[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise doc.error(path, "expected a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or (pattern is not None and not pattern.match(item)):
            hint = f" matching {pattern.pattern}" if pattern is not None else ""
            raise doc.error((*path, i), f"expected a string{hint}")
    return tuple(value)


def _include_for(doc: YamlDoc, value: Any, arches: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error(("include_for",), "expected a mapping of architecture to a list of packages")
    result: dict[str, tuple[str, ...]] = {}
    for arch, packages in value.items():
        if arch not in arches:
            raise doc.error(("include_for", arch), f"not one of this recipe's arches ({', '.join(arches)})")
        result[arch] = _strings(doc, packages, ("include_for", arch), _PACKAGE_RE)
    return result


def load_recipe(path: Path) -> BaseRecipe:
    doc = load_yaml(path)
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error((), "expected a mapping")
    for key in data:
        if key not in _KEYS:
            raise doc.error((key,), f"unknown key (allowed: {', '.join(sorted(_KEYS))})")
    for key in ("image", "suite", "variant", "source_date_epoch", "arches"):
        if key not in data:
            raise doc.error((key,), "required")
    image = data["image"]
    if not isinstance(image, str) or not _IMAGE_RE.match(image):
        raise doc.error(("image",), "expected ORG/NAME in lower case")
    suite, variant = data["suite"], data["variant"]
    if not isinstance(suite, str) or not _WORD_RE.match(suite):
        raise doc.error(("suite",), "expected a Debian suite name such as bookworm")
    if not isinstance(variant, str) or not _WORD_RE.match(variant):
        raise doc.error(("variant",), "expected an mmdebstrap variant such as minbase")
    epoch = data["source_date_epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise doc.error(("source_date_epoch",), "expected a non-negative integer (seconds)")
    arches = _strings(doc, data["arches"], ("arches",), None)
    if not arches:
        raise doc.error(("arches",), "list at least one architecture")
    for i, arch in enumerate(arches):
        if arch not in ARCHES:
            raise doc.error(("arches", i), f"unsupported (supported: {', '.join(ARCHES)})")
    if len(set(arches)) != len(arches):
        raise doc.error(("arches",), "duplicate architecture")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise doc.error(("config",), "expected a mapping with env and cmd")
    for key in config:
        if key not in _CONFIG_KEYS:
            raise doc.error(("config", key), f"unknown key (allowed: {', '.join(sorted(_CONFIG_KEYS))})")
    include_for = _include_for(doc, data.get("include_for"), arches)
    env = _strings(doc, config.get("env", [DEFAULT_PATH]), ("config", "env"), re.compile(r"^[A-Za-z_][A-Za-z0-9_]*="))
    cmd = _strings(doc, config.get("cmd", ["/bin/sh"]), ("config", "cmd"), None)
    return BaseRecipe(
        path=path,
        image=image,
        suite=suite,
        variant=variant,
        source_date_epoch=epoch,
        # Sorted: the order in the file must not change the tag or the index.
        arches=tuple(sorted(arches, key=ARCHES.index)),
        include=_strings(doc, data.get("include"), ("include",), _PACKAGE_RE),
        include_for=include_for,
        dpkg_options=_strings(doc, data.get("dpkg_options"), ("dpkg_options",), _DPKGOPT_RE),
        remove=_strings(doc, data.get("remove"), ("remove",), _REMOVE_RE),
        env=env,
        cmd=cmd,
        raw=data,
    )
