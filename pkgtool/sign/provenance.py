"""SLSA provenance v1 for a package build, and the facts of a build it is made from.

Predicate (``https://slsa.dev/provenance/v1``)::

    buildDefinition:
      buildType: https://pkgtool.dev/buildtypes/package/v1
      externalParameters:               # what the person who started the build chose
        package: pkg/sshd               # relative to the repository root
        source: {repository: URL, revision: REV}   # each only when known
        buildConfig: {path: pkg/sshd/build.yml, digest: {sha256: HEX}}
        platforms: [linux/amd64, …]
        buildArgs: {NAME: VALUE, …}
      internalParameters: {pkgtoolVersion: X, dirty: BOOL}
      resolvedDependencies:
        - {name: source, uri: git+URL@REV, digest: {pkgtoolContentHash: HASH}}
        - {name: base, uri: oci://REGISTRY/REPO[:TAG], digest: {sha256: HEX},
           annotations: {reference: REF}}                   # one per base image
    runDetails:
      builder: {id: BUILDER_ID, version: {pkgtool: X}}
      metadata: {invocationId: ID, startedOn: RFC3339, finishedOn: RFC3339}

The build type's meaning: pkgtool built ``externalParameters.package`` from the tree whose
content hash is the ``source`` dependency (:mod:`pkgtool.hashing`), for the listed
platforms, with BuildKit, ``FROM`` lines resolved to the listed base image digests.

Secrets stay out: credentials in a source URL are removed, and build arguments whose name
says they hold a secret (``*PASSWORD*``, ``*TOKEN*``, ``*SECRET*``, ``*CREDENTIAL*``,
``*PRIVATE_KEY*``) are recorded as ``[redacted]``; secrets belong in BuildKit secrets,
never in build arguments, which end up in image history too.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pkgtool import __version__
from pkgtool.errors import UsageError
from pkgtool.oci.descriptor import check_digest
from pkgtool.oci.reference import parse_reference

SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://pkgtool.dev/buildtypes/package/v1"
CONTENT_HASH_DIGEST = "pkgtoolContentHash"
REDACTED = "[redacted]"
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|PRIVATE_?KEY", re.IGNORECASE)
_HEX64 = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True)
class BuildInfo:
    """What a package build knows that its provenance and in-toto link must record.

    * ``package``: the package directory relative to the repository root (``pkg/sshd``).
    * ``source_repository`` / ``source_revision``: the git remote URL and commit, or None
      when unknown (outside git, no commits); ``dirty`` when the tree had local changes.
    * ``build_config_digest``: ``sha256:<hex>`` of the package's build.yml bytes.
    * ``content_hash``: the package's content hash (its tag, :mod:`pkgtool.hashing`).
    * ``platforms``: ``linux/amd64``-style strings, in build order.
    * ``build_args``: the effective build arguments.
    * ``base_images``: every ``FROM`` image as resolved during the build, fully qualified
      reference (``127.0.0.1:5000/pkgtool/base:TAG``) -> manifest or index digest.
    * ``materials``: package input files, path relative to the repository root -> sha256
      (hex or ``sha256:<hex>``).
    * ``builder_id``: who ran the build, a URI (:func:`default_builder_id`).
    * ``invocation_id``: unique per build run (:func:`default_invocation_id`);
      ``started_on``/``finished_on`` are timezone-aware datetimes.
    """

    package: str
    source_repository: str | None
    source_revision: str | None
    build_config_digest: str
    content_hash: str
    platforms: Sequence[str]
    build_args: Mapping[str, str]
    base_images: Mapping[str, str]
    materials: Mapping[str, str]
    builder_id: str
    invocation_id: str
    started_on: datetime.datetime
    finished_on: datetime.datetime
    dirty: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.package or self.package.startswith("/") or ".." in self.package.split("/"):
            raise UsageError(f"BuildInfo.package {self.package!r} must be a path relative to the repository")
        check_digest(self.build_config_digest)
        for ref, digest in self.base_images.items():
            check_digest(digest)
            parse_reference(ref)
        for path, value in self.materials.items():
            if not _HEX64.match(value.removeprefix("sha256:")):
                raise UsageError(f"BuildInfo.materials[{path!r}] is not a sha256 digest")
        if not self.platforms:
            raise UsageError("BuildInfo.platforms is empty")
        if not self.builder_id:
            raise UsageError("BuildInfo.builder_id is empty")
        for name in ("started_on", "finished_on"):
            if getattr(self, name).tzinfo is None:
                raise UsageError(f"BuildInfo.{name} must be timezone-aware")


LOCAL_BUILDER = "https://pkgtool.dev/builders/local"


def default_builder_id(env: Mapping[str, str]) -> str:
    """``$PKGTOOL_BUILDER_ID``; in GitHub Actions the workflow file at its ref
    (``https://github.com/ORG/REPO/.github/workflows/publish.yml@refs/heads/main``, the
    same string Fulcio puts in the keyless certificate); else :data:`LOCAL_BUILDER`."""
    if explicit := env.get("PKGTOOL_BUILDER_ID"):
        return explicit
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_WORKFLOW_REF"):
        return f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env['GITHUB_WORKFLOW_REF']}"
    return LOCAL_BUILDER


def default_invocation_id(env: Mapping[str, str]) -> str:
    """The GitHub Actions run attempt URL, else a fresh random id (metadata only: it is
    in the provenance, never in the image)."""
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_RUN_ID"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        return (f"{server}/{env.get('GITHUB_REPOSITORY', '')}/actions/runs/{env['GITHUB_RUN_ID']}"
                f"/attempts/{env.get('GITHUB_RUN_ATTEMPT', '1')}")
    import uuid

    return f"urn:uuid:{uuid.uuid4()}"


def rfc3339(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def safe_url(url: str) -> str:
    from pkgtool.gitstate import strip_credentials

    return strip_credentials(url)


def redacted_build_args(args: Mapping[str, str]) -> dict[str, str]:
    return {k: (REDACTED if _SECRET_NAME.search(k) else str(v)) for k, v in sorted(args.items())}


def provenance_predicate(build: BuildInfo) -> dict[str, Any]:
    source: dict[str, str] = {}
    if build.source_repository:
        source["repository"] = safe_url(build.source_repository)
    if build.source_revision:
        source["revision"] = build.source_revision
    external: dict[str, Any] = {
        "package": build.package,
        "source": source,
        "buildConfig": {
            "path": f"{build.package}/build.yml",
            "digest": {"sha256": build.build_config_digest.removeprefix("sha256:")},
        },
        "platforms": list(build.platforms),
        "buildArgs": redacted_build_args(build.build_args),
    }
    source_uri = "pkgtool:source-tree"
    if build.source_repository:
        source_uri = "git+" + safe_url(build.source_repository) + (
            f"@{build.source_revision}" if build.source_revision else ""
        )
    dependencies: list[dict[str, Any]] = [{
        "name": "source", "uri": source_uri,
        "digest": {CONTENT_HASH_DIGEST: build.content_hash},
    }]
    for ref in sorted(build.base_images):
        parsed = parse_reference(ref)
        dependencies.append({
            "name": "base",
            "uri": f"oci://{parsed.name}" + (f":{parsed.tag}" if parsed.tag else ""),
            "digest": {"sha256": build.base_images[ref].removeprefix("sha256:")},
            "annotations": {"reference": ref},
        })
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "internalParameters": {"pkgtoolVersion": __version__, "dirty": build.dirty, **dict(build.extra)},
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": build.builder_id, "version": {"pkgtool": __version__}},
            "metadata": {
                "invocationId": build.invocation_id,
                "startedOn": rfc3339(build.started_on),
                "finishedOn": rfc3339(build.finished_on),
            },
        },
    }


@dataclass(frozen=True)
class ProvenanceFacts:
    """What verification reads back out of a provenance predicate."""

    build_type: str
    builder_id: str
    source_repository: str | None
    source_revision: str | None
    base_images: tuple[tuple[str, str], ...]  # (oci://… uri, sha256:…)
    invocation_id: str | None


def read_provenance(predicate: Mapping[str, Any]) -> ProvenanceFacts:
    from pkgtool.sign import SignatureError

    definition = predicate.get("buildDefinition")
    details = predicate.get("runDetails")
    if not isinstance(definition, dict) or not isinstance(details, dict):
        raise SignatureError("provenance lacks buildDefinition or runDetails")
    builder = details.get("builder")
    builder_id = builder.get("id") if isinstance(builder, dict) else None
    build_type = definition.get("buildType")
    if not isinstance(builder_id, str) or not isinstance(build_type, str):
        raise SignatureError("provenance lacks runDetails.builder.id or buildDefinition.buildType")
    external = definition.get("externalParameters")
    source = external.get("source") if isinstance(external, dict) else None
    source = source if isinstance(source, dict) else {}
    bases = []
    for dependency in definition.get("resolvedDependencies") or []:
        if not isinstance(dependency, dict) or dependency.get("name") != "base":
            continue
        digest = dependency.get("digest")
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        bases.append((str(dependency.get("uri", "")), f"sha256:{sha}" if isinstance(sha, str) else ""))
    metadata = details.get("metadata")
    invocation = metadata.get("invocationId") if isinstance(metadata, dict) else None
    repository, revision = source.get("repository"), source.get("revision")
    return ProvenanceFacts(
        build_type=build_type, builder_id=builder_id,
        source_repository=repository if isinstance(repository, str) else None,
        source_revision=revision if isinstance(revision, str) else None,
        base_images=tuple(bases), invocation_id=invocation if isinstance(invocation, str) else None,
    )
