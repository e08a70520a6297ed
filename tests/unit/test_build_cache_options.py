"""--cache-from/--cache-to values, the cache entries each kind of builder gets, and the
SolveRequest they end up in."""

from __future__ import annotations

import json

import pytest

from pkgtool.buildkit._gen import control_pb2
from pkgtool.buildkit.solve import CacheEntry, set_cache_options
from pkgtool.errors import UsageError
from pkgtool.pkgbuild.cache import CacheLocation, export_entries, parse_cache_location


def test_plain_prefix_and_buildx_spelling() -> None:
    plain = parse_cache_location("ghcr.io/acme/buildcache", flag="--cache-to", default_registry="127.0.0.1:5000")
    assert plain == CacheLocation("ghcr.io", "acme/buildcache", "max")
    assert plain.ref("pkgtool/sshd", "arm64") == "ghcr.io/acme/buildcache/pkgtool/sshd:cache-arm64"
    spelled = parse_cache_location("type=registry,ref=127.0.0.1:5000/cache,mode=min", flag="--cache-to",
                                   default_registry="x")
    assert spelled == CacheLocation("127.0.0.1:5000", "cache", "min")
    # No registry in the ref: the build's registry, like every other pkgtool reference.
    assert parse_cache_location("cache", flag="--cache-from", default_registry="127.0.0.1:5000").registry == "127.0.0.1:5000"


@pytest.mark.parametrize(("value", "message"), [
    ("127.0.0.1:5000/cache:tag", "without tag or digest"),
    ("127.0.0.1:5000/Cache", "bad repository component"),
    ("type=local,dest=/tmp/x", "unknown attribute 'dest'"),
    ("type=local,ref=x/y", "only type=registry is supported"),
    ("type=registry", "type=registry needs ref=HOST/PATH"),
    ("type=registry,ref=h:1/c,mode=all", "mode must be max or min"),
    ("ref=h:1/c,,mode=max", "'' is not KEY=VALUE"),
])
def test_bad_cache_values_are_one_line_usage_errors(value: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_cache_location(value, flag="--cache-to", default_registry="127.0.0.1:5000")
    assert str(caught.value).startswith("--cache-to: ") and message in str(caught.value)


def test_buildkitd_exports_registry_max_and_dockerd_inline() -> None:
    location = CacheLocation("127.0.0.1:5000", "cache", "max")
    assert export_entries(location, builder_kind="buildkitd", package_name="o/p", arch="s390x") == [
        CacheEntry("registry", {"ref": "127.0.0.1:5000/cache/o/p:cache-s390x", "mode": "max"})]
    # dockerd 20.10's BuildKit has no registry cache exporter: inline, pushed by pkgtool.
    assert export_entries(location, builder_kind="dockerd", package_name="o/p", arch="s390x") == [CacheEntry("inline")]


def test_solve_request_carries_cache_options_and_tells_the_frontend() -> None:
    req = control_pb2.SolveRequest(Frontend="dockerfile.v0")
    imports = [CacheEntry("registry", {"ref": "h:1/c/o/p:cache-amd64"})]
    set_cache_options(req, imports=imports, exports=[CacheEntry("inline")])
    wire = control_pb2.SolveRequest.FromString(req.SerializeToString())
    assert [(e.Type, dict(e.Attrs)) for e in wire.Cache.Imports] == [("registry", {"ref": "h:1/c/o/p:cache-amd64"})]
    assert [(e.Type, dict(e.Attrs)) for e in wire.Cache.Exports] == [("inline", {})]
    assert json.loads(wire.FrontendAttrs["cache-imports"]) == [{"Type": "registry", "Attrs": {"ref": "h:1/c/o/p:cache-amd64"}}]
    bare = control_pb2.SolveRequest()
    set_cache_options(bare, imports=[], exports=[])
    assert not bare.HasField("Cache") and "cache-imports" not in bare.FrontendAttrs
