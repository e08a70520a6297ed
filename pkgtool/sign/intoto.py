"""in-toto link metadata for the build step, root layouts, and ``in_toto_verify``.

The build step's link says what went in and what came out:

* ``materials``: every package input file, by its path relative to the repository root,
  with its sha256 (what the content hash covers);
* ``products``: the pushed image, ``oci/index`` for the index and ``oci/<os>/<arch>`` for
  each per-arch manifest, whose "sha256" is the manifest digest's hex.

It is a classic in-toto v1 ``Link`` (``_type: link``) wrapped in a DSSE envelope of type
``application/vnd.in-toto+json``: exactly what in-toto 3.x loads as ``Envelope`` metadata,
so the envelope pkgtool attaches to the image is the envelope ``in_toto_verify`` checks.
Its signature carries the securesystemslib key id of the signing key, because in-toto only
considers signatures whose key id names an authorised functionary.

Verification writes that one envelope into a private temporary directory under the file
name in-toto looks for (``<step>.<keyid:8>.link``) and runs ``in_toto_verify`` on it.
Layouts with ``inspect`` steps are refused: inspections run commands, and verifying an
image must never execute what a layout file says.

The ``in_toto`` package has no type information; this module is the only one that touches
it, and only through the few calls below.
"""

from __future__ import annotations

import datetime
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkgtool.jsonio import load_object
from pkgtool.sign import SignatureError
from pkgtool.sign.dsse import Envelope
from pkgtool.sign.keys import PrivateKey, PublicKey
from pkgtool.sign.payloads import INTOTO_PAYLOAD_TYPE

BUILD_STEP = "build"
# What pkgtool's cosign .att layers and referrers call a link (there is no registered
# predicate type for a classic in-toto link; this one names the format and its version).
LINK_PREDICATE_TYPE = "https://in-toto.io/Link/v1"
INDEX_PRODUCT = "oci/index"
ECDSA_SCHEME = "ecdsa-sha2-nistp256"
# Default artifact rules of a pkgtool root layout: inputs come from the package trees,
# outputs are the image manifests, nothing else may appear.
DEFAULT_MATERIAL_RULES: tuple[tuple[str, ...], ...] = (
    ("ALLOW", "pkg/*"), ("ALLOW", "kernel/*"), ("DISALLOW", "*"),
)
DEFAULT_PRODUCT_RULES: tuple[tuple[str, ...], ...] = (("ALLOW", "oci/*"), ("DISALLOW", "*"))


def platform_product(platform: str) -> str:
    """The product name of a per-arch manifest, e.g. ``oci/linux/arm64``."""
    return f"oci/{platform}"


def _quiet_in_toto() -> None:
    # in-toto logs every verification step at INFO and command mismatches at WARNING;
    # pkgtool reports outcomes itself.
    logging.getLogger("in_toto").setLevel(logging.ERROR)


# --------------------------------------------------------------------------- keys


def securesystemslib_key(public_key: PublicKey) -> dict[str, Any]:
    """The securesystemslib key dict (with ``keyid``) in-toto layouts list."""
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

    key = SSlibKey.from_crypto(public_key, scheme=ECDSA_SCHEME)
    document: dict[str, Any] = key.to_dict()
    document["keyid"] = key.keyid
    return document


def securesystemslib_keyid(public_key: PublicKey) -> str:
    keyid = securesystemslib_key(public_key)["keyid"]
    assert isinstance(keyid, str)
    return keyid


# --------------------------------------------------------------------------- links


def make_link(
    *, materials: Mapping[str, str], products: Mapping[str, str], name: str = BUILD_STEP,
    command: Sequence[str] = (),
) -> bytes:
    """The JSON payload of an in-toto link (sha256 hex values, paths as given)."""
    _quiet_in_toto()
    from in_toto.models.link import Link  # type: ignore[import-untyped]
    from in_toto.models.metadata import Envelope as InTotoEnvelope  # type: ignore[import-untyped]

    link = Link(
        name=name,
        materials={path: {"sha256": _hex(value, path)} for path, value in sorted(materials.items())},
        products={path: {"sha256": _hex(value, path)} for path, value in sorted(products.items())},
        byproducts={}, command=list(command), environment={},
    )
    # in-toto's own serialisation, so the bytes are the ones its tools would sign.
    payload = InTotoEnvelope.from_signable(link).payload
    assert isinstance(payload, bytes)
    return payload


@dataclass(frozen=True)
class LinkInfo:
    name: str
    materials: dict[str, str]
    products: dict[str, str]


def parse_link(payload: bytes) -> LinkInfo:
    """The fields pkgtool checks of a link payload (after its signature was verified)."""
    document = load_object(payload, what="in-toto link payload", error=SignatureError)
    if document.get("_type") != "link":
        raise SignatureError("in-toto link payload is not a link (_type is not 'link')")

    def artifacts(field: str) -> dict[str, str]:
        raw = document.get(field)
        if not isinstance(raw, dict):
            raise SignatureError(f"in-toto link lacks {field}")
        out = {}
        for path, hashes in raw.items():
            sha = hashes.get("sha256") if isinstance(hashes, dict) else None
            if isinstance(sha, str):
                out[str(path)] = sha
        return out

    return LinkInfo(str(document.get("name", "")), artifacts("materials"), artifacts("products"))


# --------------------------------------------------------------------------- layouts


def make_layout(
    *,
    layout_key: PrivateKey,
    functionaries: Sequence[PublicKey],
    expires: datetime.datetime,
    readme: str = "",
    material_rules: Sequence[Sequence[str]] = DEFAULT_MATERIAL_RULES,
    product_rules: Sequence[Sequence[str]] = DEFAULT_PRODUCT_RULES,
) -> bytes:
    """A root layout with one ``build`` step, signed by ``layout_key`` (DSSE JSON).

    Any one of ``functionaries`` may sign the step's link (threshold 1).
    """
    _quiet_in_toto()
    from in_toto.models.layout import Layout, Step  # type: ignore[import-untyped]
    from in_toto.models.metadata import Envelope as InTotoEnvelope

    # securesystemslib re-exports these without __all__, which strict mypy cannot see.
    from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

    if not functionaries:
        raise ValueError("a layout needs at least one functionary key")
    keys = {k["keyid"]: k for k in (securesystemslib_key(f) for f in functionaries)}
    step = Step(
        name=BUILD_STEP, pubkeys=sorted(keys), threshold=1,
        expected_materials=[list(rule) for rule in material_rules],
        expected_products=[list(rule) for rule in product_rules],
    )
    when = expires.astimezone(datetime.UTC).replace(microsecond=0)
    layout = Layout(
        steps=[step], inspect=[], keys=keys, readme=readme,
        expires=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    envelope = InTotoEnvelope.from_signable(layout)
    public = SSlibKey.from_crypto(layout_key.public_key(), scheme=ECDSA_SCHEME)
    envelope.create_signature(CryptoSigner(layout_key, public))
    return json.dumps(envelope.to_dict(), sort_keys=True, indent=1).encode() + b"\n"


@dataclass(frozen=True)
class LayoutCheck:
    """What ``in_toto_verify`` accepted."""

    layout_expires: str
    functionary_keyid: str
    link: LinkInfo


def verify_link(
    layout: bytes,
    layout_keys: Sequence[PublicKey],
    link: Envelope,
    *,
    index_digest: str,
    source: str = "in-toto layout",
) -> LayoutCheck:
    """Run ``in_toto_verify`` on ``layout`` with ``link`` as the build step's link.

    Raises :class:`SignatureError` naming the failed check: the layout's signature, its
    expiry, the link's functionary signature, an artifact rule, or (afterwards) that the
    link's ``oci/index`` product is not ``index_digest``, so a valid link of another
    image cannot be replayed.
    """
    _quiet_in_toto()
    from in_toto import exceptions as intoto_errors  # type: ignore[import-untyped]
    from in_toto.models.metadata import Metadata
    from in_toto.verifylib import in_toto_verify  # type: ignore[import-untyped]
    from securesystemslib import exceptions as sslib_errors

    if not layout_keys:
        raise SignatureError(f"{source}: no layout key to verify it with")
    try:
        metadata = Metadata.from_dict(json.loads(layout))
        payload = metadata.get_payload()
    except (ValueError, KeyError, TypeError, intoto_errors.Error, sslib_errors.Error) as exc:
        raise SignatureError(f"{source}: not a valid in-toto layout ({type(exc).__name__})") from exc
    if getattr(payload, "type_", None) != "layout":
        raise SignatureError(f"{source}: the metadata is a {getattr(payload, 'type_', '?')}, not a layout")
    if payload.inspect:
        raise SignatureError(f"{source}: layout has inspections; pkgtool never runs layout commands")
    steps = [step for step in payload.steps if step.name == BUILD_STEP]
    if not steps:
        raise SignatureError(f"{source}: layout has no '{BUILD_STEP}' step")
    if link.payload_type != INTOTO_PAYLOAD_TYPE or not link.signatures:
        raise SignatureError("in-toto link envelope has the wrong payload type or no signature")
    keyid = link.signatures[0].keyid
    if keyid not in steps[0].pubkeys:
        raise SignatureError(
            f"{source}: the link is signed by key id {keyid[:16] or '(none)'}, which the layout "
            f"does not authorise for step '{BUILD_STEP}'"
        )
    key_dict = {k["keyid"]: k for k in (securesystemslib_key(key) for key in layout_keys)}
    with tempfile.TemporaryDirectory(prefix="pkgtool-intoto-") as work:
        from in_toto.models.link import FILENAME_FORMAT

        name = FILENAME_FORMAT.format(step_name=BUILD_STEP, keyid=keyid)
        (Path(work) / name).write_bytes(link.to_json())
        try:
            in_toto_verify(metadata, key_dict, link_dir_path=work, persist_inspection_links=False)
        except intoto_errors.SignatureVerificationError as exc:
            raise SignatureError(f"{source}: layout signature does not verify with the layout key(s)") from exc
        except intoto_errors.LayoutExpiredError as exc:
            raise SignatureError(f"{source}: layout expired on {payload.expires}") from exc
        except (intoto_errors.LinkNotFoundError, intoto_errors.ThresholdVerificationError) as exc:
            raise SignatureError(
                f"{source}: no '{BUILD_STEP}' link signed by an authorised functionary ({_first_line(exc)})"
            ) from exc
        except intoto_errors.RuleVerificationError as exc:
            raise SignatureError(f"{source}: artifact rule failed: {_first_line(exc)}") from exc
        except (intoto_errors.Error, sslib_errors.Error) as exc:
            raise SignatureError(f"{source}: in_toto_verify failed: {_first_line(exc)}") from exc
    info = parse_link(link.payload)
    product = info.products.get(INDEX_PRODUCT)
    if product != index_digest.removeprefix("sha256:"):
        raise SignatureError(
            f"in-toto link: product {INDEX_PRODUCT} is sha256:{product or '(missing)'}, not {index_digest}"
        )
    return LayoutCheck(str(payload.expires), keyid, info)


def _hex(value: str, path: str) -> str:
    text = value.removeprefix("sha256:")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"in-toto artifact {path!r}: {value!r} is not a sha256 digest")
    return text


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__
