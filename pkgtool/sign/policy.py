"""The verification policy (``signing/policy.yml``): what an auditor demands of an image.

Format (every key optional; unknown keys are errors naming ``file:line``)::

    version: 1
    keys: [keys/release.pub]            # trusted signing keys (paths relative to this file),
                                        # used when `pkgtool verify` gets no --key/--identity
    identities:                         # trusted keyless signers, likewise
      - {identity: https://github.com/ORG/REPO/.github/workflows/publish.yml@refs/heads/main,
         issuer: https://token.actions.githubusercontent.com}
    builders: [https://…]               # allowed provenance runDetails.builder.id (globs)
    source_repositories: [https://github.com/ORG/REPO]   # allowed source repositories
    require_revision: true              # provenance must name the source revision
    base_images: ["127.0.0.1:5000/pkgtool/*"]            # allowed base image repositories (globs)
    require:
      signatures: [bundle, cosign]      # signature shapes that must verify on every digest
      attestations: [slsa-provenance, spdx]               # attestations that must be present
    in_toto:
      layout: root.layout               # signed root layout (relative to this file)
      keys: [keys/layout.pub]           # the layout's signing keys
      require: key-signed               # always | key-signed | never

Deny by default: an image passes only what the policy lists *and* verifies, and a policy
that lists no trusted signer at all cannot be used without ``--key`` or ``--identity``.
Without a policy file, :data:`DEFAULT_POLICY` applies: both signature shapes and an SBOM
per arch are required, provenance is checked when present but not required.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkgtool.yamlload import YamlDoc, load_yaml

SIGNATURE_SHAPES = ("bundle", "cosign")
ATTESTATION_KINDS = ("slsa-provenance", "spdx")
IN_TOTO_REQUIRE = ("always", "key-signed", "never")
_KEYS = ("version", "keys", "identities", "builders", "source_repositories", "require_revision",
         "base_images", "require", "in_toto")


@dataclass(frozen=True)
class TrustedIdentity:
    identity: str
    issuer: str


@dataclass(frozen=True)
class InTotoPolicy:
    layout: Path
    keys: tuple[Path, ...]
    require: str = "key-signed"


@dataclass(frozen=True)
class Policy:
    source: str
    keys: tuple[Path, ...] = ()
    identities: tuple[TrustedIdentity, ...] = ()
    builders: tuple[str, ...] = ()
    source_repositories: tuple[str, ...] = ()
    require_revision: bool = False
    base_images: tuple[str, ...] = ()
    signatures: tuple[str, ...] = SIGNATURE_SHAPES
    attestations: tuple[str, ...] = ("spdx",)
    in_toto: InTotoPolicy | None = None
    restricts_builders: bool = field(default=False)
    restricts_sources: bool = field(default=False)
    restricts_bases: bool = field(default=False)

    def builder_allowed(self, builder_id: str) -> bool:
        return not self.restricts_builders or any(
            fnmatch.fnmatchcase(builder_id, pattern) for pattern in self.builders
        )

    def source_allowed(self, repository: str) -> bool:
        wanted = normalize_repository(repository)
        return not self.restricts_sources or any(
            fnmatch.fnmatchcase(wanted, normalize_repository(pattern)) for pattern in self.source_repositories
        )

    def base_image_allowed(self, repository: str) -> bool:
        return not self.restricts_bases or any(
            fnmatch.fnmatchcase(repository, pattern) for pattern in self.base_images
        )

    def in_toto_required(self, *, key_based: bool) -> bool:
        if self.in_toto is None:
            return False
        return self.in_toto.require == "always" or (self.in_toto.require == "key-signed" and key_based)


DEFAULT_POLICY = Policy(source="(default policy)")


def normalize_repository(url: str) -> str:
    """``https://github.com/o/r.git/`` and ``https://github.com/o/r`` are one repository."""
    text = url.strip().rstrip("/")
    return text[:-4] if text.endswith(".git") else text


def load_policy(path: Path) -> Policy:
    doc = load_yaml(path)
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise doc.error((), "a policy is a mapping")
    for key in data:
        if key not in _KEYS:
            raise doc.error((key,), f"unknown key (expected one of: {', '.join(_KEYS)})")
    if data.get("version", 1) != 1:
        raise doc.error(("version",), "only policy version 1 is supported")
    base = path.parent
    require = data.get("require", {})
    if not isinstance(require, dict):
        raise doc.error(("require",), "expected a mapping")
    for key in require:
        if key not in ("signatures", "attestations"):
            raise doc.error(("require", key), "unknown key (expected signatures or attestations)")
    signatures = _choices(doc, require, ("require", "signatures"), SIGNATURE_SHAPES, list(SIGNATURE_SHAPES))
    if not signatures:
        raise doc.error(("require", "signatures"), "at least one signature shape must be required")
    attestations = _choices(doc, require, ("require", "attestations"), ATTESTATION_KINDS, ["spdx"])
    identities = []
    for i, entry in enumerate(_list(doc, data, ("identities",))):
        if not isinstance(entry, dict) or set(entry) != {"identity", "issuer"}:
            raise doc.error(("identities", i), "expected {identity: …, issuer: …}")
        identities.append(TrustedIdentity(str(entry["identity"]), str(entry["issuer"])))
    in_toto = None
    if "in_toto" in data:
        raw = data["in_toto"]
        if not isinstance(raw, dict) or "layout" not in raw:
            raise doc.error(("in_toto",), "expected a mapping with layout and keys")
        for key in raw:
            if key not in ("layout", "keys", "require"):
                raise doc.error(("in_toto", key), "unknown key (expected layout, keys, require)")
        layout_keys = tuple(base / str(p) for p in _list(doc, raw, ("keys",), where=("in_toto", "keys")))
        if not layout_keys:
            raise doc.error(("in_toto", "keys"), "the layout's signing keys are required")
        mode = raw.get("require", "key-signed")
        if mode not in IN_TOTO_REQUIRE:
            raise doc.error(("in_toto", "require"), f"expected one of {', '.join(IN_TOTO_REQUIRE)}")
        in_toto = InTotoPolicy(base / str(raw["layout"]), layout_keys, str(mode))
    revision = data.get("require_revision", False)
    if not isinstance(revision, bool):
        raise doc.error(("require_revision",), "expected true or false")
    return Policy(
        source=str(path),
        keys=tuple(base / str(p) for p in _list(doc, data, ("keys",))),
        identities=tuple(identities),
        builders=tuple(str(b) for b in _list(doc, data, ("builders",))),
        source_repositories=tuple(str(s) for s in _list(doc, data, ("source_repositories",))),
        require_revision=revision,
        base_images=tuple(str(b) for b in _list(doc, data, ("base_images",))),
        signatures=tuple(signatures), attestations=tuple(attestations), in_toto=in_toto,
        restricts_builders="builders" in data, restricts_sources="source_repositories" in data,
        restricts_bases="base_images" in data,
    )


def _list(doc: YamlDoc, data: dict[str, Any], path: tuple[str, ...], *, where: tuple[str, ...] | None = None) -> list[Any]:
    value = data.get(path[-1], [])
    if not isinstance(value, list):
        raise doc.error(where or path, "expected a list")
    return value


def _choices(doc: YamlDoc, data: dict[str, Any], path: tuple[str, str], allowed: tuple[str, ...], default: list[str]) -> list[str]:
    value = data.get(path[-1], default)
    if not isinstance(value, list):
        raise doc.error(path, "expected a list")
    for i, item in enumerate(value):
        if item not in allowed:
            raise doc.error((*path, i), f"unknown {path[-1][:-1]} {item!r} (expected one of: {', '.join(allowed)})")
    return [str(v) for v in dict.fromkeys(value)]

