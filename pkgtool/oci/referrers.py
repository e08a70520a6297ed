"""Referrers (OCI 1.1): listing and adding manifests whose ``subject`` is an image.

Registries with the referrers API (``GET /v2/<name>/referrers/<digest>``) index referrers
themselves.  Distribution 2.8 has none (it answers 404), so the fallback of the image and
distribution specs is used: an index at tag ``sha256-<hex>`` that lists them, updated by
read-modify-write and read back to catch a concurrent writer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pkgtool.errors import RegistryError
from pkgtool.oci import auth, mediatypes
from pkgtool.oci.descriptor import Descriptor, check_digest
from pkgtool.oci.manifest import build_index, parse_manifest

if TYPE_CHECKING:
    from pkgtool.oci.registry import RegistryClient


def fallback_tag(digest: str) -> str:
    """The tag of the referrers fallback index for ``digest`` (``sha256-<hex>``)."""
    check_digest(digest)
    return digest.replace(":", "-", 1)




def list_referrers(
    client: RegistryClient, repository: str, digest: str, *, artifact_type: str | None = None
) -> list[Descriptor]:
    """Manifests whose ``subject`` is ``digest``: from the referrers API, or from the
    fallback index at tag ``sha256-<hex>`` where the registry has no such API."""
    api = _referrers_api(client, repository, digest, artifact_type=artifact_type)
    found = api if api is not None else _fallback_referrers(client, repository, digest)
    return [d for d in found if artifact_type is None or d.artifact_type == artifact_type]

def add_referrer(client: RegistryClient, repository: str, subject: Descriptor | str, descriptor: Descriptor) -> None:
    """Record ``descriptor`` (a manifest already pushed, whose subject is ``subject``).

    A registry with the referrers API indexes it by itclient.  Otherwise the fallback
    index is read, extended (no duplicates) and written back; the write is re-read to
    catch a concurrent writer that replaced it, and repeated a few times if so.
    """
    subject_digest = subject if isinstance(subject, str) else subject.digest
    check_digest(subject_digest)
    if _referrers_api(client, repository, subject_digest, artifact_type=None) is not None:
        return
    tag = fallback_tag(subject_digest)
    for _attempt in range(5):
        current = _fallback_referrers(client, repository, subject_digest)
        if any(d.digest == descriptor.digest for d in current):
            return
        index = build_index([*current, descriptor])
        client.put_manifest(repository, tag, index, mediatypes.OCI_INDEX)
        if any(d.digest == descriptor.digest for d in _fallback_referrers(client, repository, subject_digest)):
            return
    raise RegistryError(
        f"registry {client.registry}: could not add a referrer to {repository}:{tag}: "
        "other writers keep replacing it"
    )

def _referrers_api(
    client: RegistryClient, repository: str, digest: str, *, artifact_type: str | None
) -> list[Descriptor] | None:
    from pkgtool.oci.http import content_type  # HTTP code only where HTTP is spoken

    check_digest(digest)
    operation = f"GET referrers {repository}@{digest}"

    def attempt(_n: int) -> tuple[bytes, str] | None:
        response = client.request(
            "GET", f"/v2/{repository}/referrers/{digest}", operation=operation,
            params={"artifactType": artifact_type} if artifact_type else None,
            scopes=(auth.repository_scope(repository, "pull"),),
            headers={"Accept": mediatypes.OCI_INDEX},
        )
        with response:
            # 404 is how a registry without the API answers (Distribution 2.8 does).
            if response.status_code == 404:
                return None
            client.expect(response, (200,), operation)
            data = client.read_bounded(response, mediatypes.MAX_MANIFEST_BYTES, operation, what="referrers index")
            return data, content_type(response)

    answer = client.transport.retrying(client.registry, operation, attempt)
    if answer is None or answer[1] != mediatypes.OCI_INDEX:
        # Some servers answer unknown routes with a 200 page: that is no referrers API.
        return None
    return list(parse_manifest(answer[0], content_type=answer[1], source=operation).manifests)

def _fallback_referrers(client: RegistryClient, repository: str, digest: str) -> list[Descriptor]:
    found = client.get_manifest_or_none(repository, fallback_tag(digest))
    if found is None:
        return []
    if not found.is_index:
        raise RegistryError(
            f"{client.name_of(repository, fallback_tag(digest))}: referrers tag holds a "
            f"{found.media_type}, not an index"
        )
    return list(found.manifests)

