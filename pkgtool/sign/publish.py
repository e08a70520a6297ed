"""Sign and attest an image that is in a registry: what ``pkgtool build --sign`` and
``pkgtool sign`` do after the image is pushed.

For the index and for every per-arch manifest it lists, pkgtool attaches:

==================  ==========================================  ==========================
what                subject (in-toto) / payload                 where
==================  ==========================================  ==========================
signature           simple-signing payload naming the digest    ``sha256-<hex>.sig``
signature bundle    Statement, predicate ``cosign/sign/v1``     referrer
SLSA provenance     Statement about the index *and* manifests   referrer + ``.att``
                    (only with :class:`BuildInfo`)
SBOM (SPDX 2.3)     Statement about one manifest (per arch)     referrer + ``.att``
in-toto link        build step, products = all digests          referrer + ``.att``
                    (index only; key signers with BuildInfo)
==================  ==========================================  ==========================

Idempotent: before signing anything, the existing referrers and ``.att``/``.sig`` layers
of the digest are read; an item whose exact payload bytes this signer has signed already
is not signed again, so running ``pkgtool sign`` twice adds nothing.  The SBOM and the
statements are deterministic, which is what makes that comparison work.

The lead engineer's entry point is :func:`sign_package`; ``pkgtool sign REF`` uses
:func:`sign_reference`, which has no build facts and so attaches signatures and SBOMs but
no provenance or link.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pkgtool.errors import PkgtoolError
from pkgtool.jsonio import load_object, object_or_none
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.oci.layer import Layer
from pkgtool.oci.reference import Reference
from pkgtool.oci.source import CachedSource, ImageSource, config_descriptor, read_blob
from pkgtool.sign.attach import (
    COSIGN_SIGN_PREDICATE_TYPE,
    AttestationLayer,
    attach_attestation,
    attach_bundle,
    attach_signature,
    attestation_tag,
    read_attestation_layers,
    read_bundles,
    signature_tag,
)
from pkgtool.sign.intoto import INDEX_PRODUCT, LINK_PREDICATE_TYPE, make_link, platform_product
from pkgtool.sign.payloads import Subject, intoto_statement
from pkgtool.sign.provenance import SLSA_PROVENANCE_V1, BuildInfo, provenance_predicate
from pkgtool.sign.sbom import SPDX_PREDICATE_TYPE, image_sbom
from pkgtool.sign.signer import SignedStatement, Signer, bundle_payload

if TYPE_CHECKING:
    from pathlib import Path

    from pkgtool.oci.layout import Layout
    from pkgtool.oci.registry import RegistryClient

__all__ = ["Attached", "BuildInfo", "SignReport", "sign_package", "sign_reference", "signer_for"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Attached:
    """One item attached (or found already attached) to a digest."""

    digest: str
    kind: str  # signature | signature-bundle | provenance | sbom | in-toto-link
    shape: str  # cosign-sig | cosign-att | referrer
    location: str  # the tag, or the referrer manifest's digest
    added: bool  # False: this signer had attached the same payload before

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "kind": self.kind, "shape": self.shape,
                "location": self.location, "added": self.added}


@dataclass(frozen=True)
class SignReport:
    repository: str  # registry/repository
    index: str  # the root digest (an index, or a lone manifest)
    manifests: Mapping[str, str]  # platform -> manifest digest
    signer: str
    attached: tuple[Attached, ...]
    skipped: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository, "index": self.index, "manifests": dict(self.manifests),
            "signer": self.signer, "attached": [a.to_json() for a in self.attached],
            "skipped": list(self.skipped),
        }

    @property
    def added(self) -> int:
        return sum(1 for a in self.attached if a.added)


def signer_for(key: Path | None) -> Signer:
    """The signer for ``--key K`` (a cosign key file; the password comes from
    ``$PKGTOOL_PASSWORD``/``$COSIGN_PASSWORD`` or a prompt), or the keyless signer for the
    ambient OIDC identity when ``key`` is None.  Without either it raises the one-line
    "no key and no identity token" :class:`~pkgtool.errors.PkgtoolError`.

    Call it before building, so a wrong password or a missing token fails in a second,
    not after an hour of builds.
    """
    if key is not None:
        from pkgtool.sign.keys import load_private_key_file
        from pkgtool.sign.signer import KeySigner

        return KeySigner(load_private_key_file(key))
    from pkgtool.sign.keyless import keyless_signer

    return keyless_signer()


def sign_package(
    client: RegistryClient,
    *,
    repository: str,
    index: Descriptor,
    manifests: Mapping[str, Descriptor],
    build: BuildInfo,
    signer: Signer,
    layout_cache: Layout | None = None,
    sbom: bool = True,
    progress: Progress | None = None,
    complete: bool = False,
) -> SignReport:
    """Sign and attest a package the build has just pushed (or, with ``complete``, one that
    was already up to date: then only what this signer has not attached yet is added).

    * ``client``: a :class:`~pkgtool.oci.registry.RegistryClient` for the registry the
      package was pushed to; ``repository`` its path there (``pkgtool/sshd``).
    * ``index``: the descriptor of the pushed index (``ORG/IMAGE:<tag>``).
    * ``manifests``: the per-arch manifests of that index, keyed by arch (``amd64``) or
      platform (``linux/amd64``).
    * ``build``: the build's facts (:class:`BuildInfo`), for the SLSA provenance and the
      in-toto link.
    * ``signer``: :func:`signer_for` (``--key K``, or keyless when there is no key).
    * ``layout_cache``: the build's OCI layout cache; layers for the SBOM are streamed from
      it when present there, from the registry otherwise (digest-verified either way).
    * ``sbom``: False skips the per-arch SBOMs.
    * ``complete``: an item counts as present when this signer attached one of its type
      before, even with other bytes (a provenance differs in its timestamps), so signing an
      up-to-date package again adds nothing.

    Everything is attached both as an OCI referrer (Distribution 2.8: the ``sha256-<hex>``
    fallback index) and the cosign way (``.sig``/``.att`` tags).  Idempotent: signing the
    same push again with the same ``build`` attaches nothing new.  Raises
    :class:`~pkgtool.errors.PkgtoolError` (one line, no secrets) on failure; what was
    attached before the failure stays attached and is skipped by the retry.

    Wiring ``pkgtool build --sign [--key K]``, roughly::

        signer = signer_for(Path(args.key) if args.key else None)   # before building
        ...                                                         # build and push
        env = os.environ
        report = sign_package(
            client, repository="pkgtool/sshd", index=index_descriptor,
            manifests={"amd64": amd64_descriptor, "arm64": arm64_descriptor},
            build=BuildInfo(
                package="pkg/sshd", source_repository=git.source_url,
                source_revision=git.revision, dirty=git.dirty,
                build_config_digest=sha256_digest(build_yml_bytes), content_hash=tag_hash,
                platforms=("linux/amd64", "linux/arm64"), build_args=args_used,
                base_images={"127.0.0.1:5000/pkgtool/base:TAG": "sha256:…"},
                materials={"pkg/sshd/Dockerfile": "<sha256 hex>", …},
                builder_id=default_builder_id(env), invocation_id=default_invocation_id(env),
                started_on=started, finished_on=datetime.now(UTC),
            ),
            signer=signer, layout_cache=layout,
        )

    (``default_builder_id`` and ``default_invocation_id`` are in
    :mod:`pkgtool.sign.provenance`.)
    """
    targets = [(_platform_key(key), descriptor) for key, descriptor in manifests.items()]
    return _sign(client, repository=repository, root=index, manifests=targets, build=build,
                 signer=signer, layout=layout_cache, sbom=sbom, progress=progress, complete=complete)


def sign_reference(
    client: RegistryClient,
    reference: str,
    *,
    signer: Signer,
    layout_cache: Layout | None = None,
    build: BuildInfo | None = None,
    sbom: bool = True,
    progress: Progress | None = None,
) -> SignReport:
    """Sign an image already in the registry, by tag or digest (``pkgtool sign REF``).

    An index is signed with every image manifest it lists (attestation manifests and
    other ``unknown/unknown`` entries are skipped); a lone manifest is signed by itself.
    Without ``build`` there is no provenance and no in-toto link.
    """
    from pkgtool.oci.reference import parse_reference
    from pkgtool.settings import registry as default_registry

    ref = parse_reference(reference, default_registry=client.registry or default_registry())
    client = client.for_registry(ref.registry)
    root = client.get_manifest(ref.repository, ref.locator)
    manifests: list[tuple[Platform, Descriptor]] = []
    if root.is_index:
        for entry in root.manifests:
            if entry.media_type not in mediatypes.MANIFEST_TYPES:
                continue
            platform = entry.platform
            if platform is None or platform.os == "unknown" or platform.architecture == "unknown":
                continue
            manifests.append((platform, entry))
        if not manifests:
            raise PkgtoolError(f"{ref}: index {root.digest} lists no image manifests to sign")
    return _sign(client, repository=ref.repository, root=root.descriptor, manifests=manifests,
                 build=build, signer=signer, layout=layout_cache, sbom=sbom, progress=progress)


# --------------------------------------------------------------------------- the work


class _Existing:
    """What is attached to one digest already (read once, extended as we attach)."""

    def __init__(self, client: RegistryClient, repository: str, digest: str) -> None:
        image = Reference(client.registry, repository)
        self.bundles = read_bundles(client, image, digest=digest)
        self.layers: list[AttestationLayer] = read_attestation_layers(client, image, digest=digest)

    def has_bundle(self, payload: bytes, signer: Signer) -> bool:
        return any(bundle_payload(b) == payload and signer.owns_bundle(b) for b in self.bundles)

    def has_layer(self, payload: bytes, signer: Signer) -> bool:
        return any(
            layer.envelope.payload == payload and signer.owns_envelope(layer.envelope, layer.annotations)
            for layer in self.layers
        )

    def has_bundle_of(self, predicate_type: str, signer: Signer) -> bool:
        """A bundle of this predicate type by ``signer``, whatever its payload."""
        return any(signer.owns_bundle(b) and _predicate_type(bundle_payload(b)) == predicate_type for b in self.bundles)

    def has_layer_of(self, predicate_type: str, signer: Signer) -> bool:
        return any(
            _predicate_type(layer.envelope.payload) == predicate_type
            and signer.owns_envelope(layer.envelope, layer.annotations)
            for layer in self.layers
        )


def _predicate_type(payload: bytes | None) -> str:
    document = object_or_none(payload) if payload is not None else None
    value = document.get("predicateType") if document is not None else None
    return value if isinstance(value, str) else ""


def _sign(
    client: RegistryClient,
    *,
    repository: str,
    root: Descriptor,
    manifests: Sequence[tuple[Platform, Descriptor]],
    build: BuildInfo | None,
    signer: Signer,
    layout: Layout | None,
    sbom: bool,
    progress: Progress | None,
    complete: bool = False,
) -> SignReport:
    say = progress or (lambda _message: None)
    name = f"{client.registry}/{repository}"
    is_index = root.media_type in mediatypes.INDEX_TYPES
    per_arch: list[tuple[Platform | None, Descriptor]] = list(manifests) if is_index else [(None, root)]
    targets = [root, *[d for _p, d in per_arch if d.digest != root.digest]]
    attached: list[Attached] = []
    skipped: list[str] = []
    existing: dict[str, _Existing] = {}

    def current(digest: str) -> _Existing:
        if digest not in existing:
            existing[digest] = _Existing(client, repository, digest)
        return existing[digest]

    def attest(target: Descriptor, kind: str, predicate_type: str, payload: bytes,
               sign: Callable[[], SignedStatement | None], *, att: bool = True) -> None:
        """Attach ``payload`` (signed once, lazily) as a referrer and, if ``att``, in .att."""
        found = current(target.digest)
        need_bundle = not found.has_bundle(payload, signer)
        need_layer = att and not found.has_layer(payload, signer)
        if complete:
            # Completing an image signed before: any statement of this type by this signer
            # will do (a provenance made now would differ in its timestamps only).
            need_bundle = need_bundle and not found.has_bundle_of(predicate_type, signer)
            need_layer = need_layer and not found.has_layer_of(predicate_type, signer)
        signed = sign() if need_bundle or need_layer else None
        if (need_bundle or need_layer) and signed is None:
            skipped.append(f"{kind}: {signer.description} cannot sign it")
            return
        if need_bundle:
            assert signed is not None
            referrer = attach_bundle(client, repository=repository, subject=target,
                                     bundle=signed.bundle, predicate_type=predicate_type)
            found.bundles.append(signed.bundle)
            attached.append(Attached(target.digest, kind, "referrer", referrer.digest, True))
        else:
            attached.append(Attached(target.digest, kind, "referrer", "(existing)", False))
        if att:
            if need_layer:
                assert signed is not None
                attach_attestation(client, repository=repository, digest=target.digest,
                                   envelope=signed.envelope, predicate_type=predicate_type,
                                   annotations=signed.annotations)
                found.layers.append(AttestationLayer(signed.envelope, dict(signed.annotations)))
            attached.append(Attached(target.digest, kind, "cosign-att", attestation_tag(target.digest), need_layer))

    def once(make: Callable[[], SignedStatement | None]) -> Callable[[], SignedStatement | None]:
        # One signature per payload, however many digests it is attached to.
        memo: list[SignedStatement | None] = []

        def get() -> SignedStatement | None:
            if not memo:
                memo.append(make())
            return memo[0]

        return get

    # 1. Signatures: .sig and a signature bundle for every digest.
    for target in targets:
        say(f"signing {name}@{target.digest}")
        _descriptor, added = attach_signature(client, repository=repository, docker_reference=name,
                                              digest=target.digest, signer=signer)
        attached.append(Attached(target.digest, "signature", "cosign-sig", signature_tag(target.digest), added))
        statement = intoto_statement(subjects=[Subject(name, target.digest)],
                                     predicate_type=COSIGN_SIGN_PREDICATE_TYPE, predicate={})
        attest(target, "signature-bundle", COSIGN_SIGN_PREDICATE_TYPE, statement,
               once(functools.partial(signer.sign_statement, statement)), att=False)

    # 2. Provenance: one statement about every digest, attached to each of them.
    if build is not None:
        statement = intoto_statement(
            subjects=[Subject(name, t.digest) for t in targets],
            predicate_type=SLSA_PROVENANCE_V1, predicate=provenance_predicate(build),
        )
        sign_provenance = once(lambda: signer.sign_statement(statement))
        for target in targets:
            say(f"attesting provenance for {target.digest}")
            attest(target, "provenance", SLSA_PROVENANCE_V1, statement, sign_provenance)
    else:
        skipped.append("provenance: no build information (provenance comes from `pkgtool build --sign`)")

    # 3. SBOMs: one per arch, from the image's own layers.
    if sbom:
        for platform, manifest_descriptor in per_arch:
            say(f"writing the SBOM of {manifest_descriptor.digest}")
            document = _sbom(client, repository, name, manifest_descriptor, platform, layout)
            statement = intoto_statement(subjects=[Subject(name, manifest_descriptor.digest)],
                                         predicate_type=SPDX_PREDICATE_TYPE, predicate=json.loads(document))
            attest(manifest_descriptor, "sbom", SPDX_PREDICATE_TYPE, statement,
                   once(functools.partial(signer.sign_statement, statement)))

    # 4. The in-toto link of the build step, on the root.
    if build is None:
        skipped.append("in-toto link: no build information (links come from `pkgtool build --sign`)")
    else:
        products = {INDEX_PRODUCT: root.digest}
        for platform, descriptor in per_arch:
            if platform is not None:
                products[platform_product(str(platform))] = descriptor.digest
        link = make_link(materials=build.materials, products=products)
        attest(root, "in-toto-link", LINK_PREDICATE_TYPE, link, once(lambda: signer.sign_link(link)))

    return SignReport(
        repository=name, index=root.digest,
        manifests={str(p): d.digest for p, d in per_arch if p is not None},
        signer=signer.description, attached=tuple(attached), skipped=tuple(skipped),
    )


def _sbom(
    client: RegistryClient, repository: str, name: str, descriptor: Descriptor,
    platform: Platform | None, layout: Layout | None,
) -> bytes:
    # Layers come from the cache when the build just put them there, else the registry.
    source: ImageSource = CachedSource(layout, lambda: client) if layout is not None else client
    ref = Reference(client.registry, repository, digest=descriptor.digest)
    manifest = source.manifest(ref)
    config_ref = config_descriptor(manifest, what=f"{name}@{descriptor.digest}: cannot make an SBOM")
    config = load_object(read_blob(source, ref, config_ref, max_size=mediatypes.MAX_MANIFEST_BYTES),
                         what=f"{name}@{descriptor.digest}: image config")
    if platform is None:
        platform = Platform(str(config.get("os") or "linux"), str(config.get("architecture") or "unknown"))
    layers = Layer.of_image(source, ref, manifest.layers, config, image=f"{name}@{descriptor.digest}")
    return image_sbom(repository_name=name, manifest=descriptor, platform=platform, layers=layers, config=config)


def _platform_key(key: str) -> Platform:
    return Platform.parse(key)
