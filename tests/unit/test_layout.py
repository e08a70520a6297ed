"""The OCI layout cache: blobs, refs, verification, gc, and the `pkgtool cache` commands."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgtool.cli import main
from pkgtool.commands.cache import human_size
from pkgtool.errors import CacheError, DigestMismatchError
from pkgtool.jsonio import hashed_json
from pkgtool.oci import layout_gc
from pkgtool.oci import mediatypes as mt
from pkgtool.oci.descriptor import Descriptor, Platform, sha256_digest
from pkgtool.oci.layout import REF_NAME_ANNOTATION, TEMP_PREFIX, Layout


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    lay = Layout(tmp_path / "cache")
    lay.ensure()
    return lay


def temp_files(layout: Layout) -> list[str]:
    return [p.name for p in layout.root.rglob(f"{TEMP_PREFIX}*")]


def make_image(layout: Layout, tag: str | None, *, layers: list[bytes], arch: str = "amd64") -> Descriptor:
    """Store a small manifest with the given layer blobs; tag it if ``tag`` is given."""
    layer_descs = [Descriptor.for_bytes(mt.OCI_LAYER_GZIP, data) for data in layers]
    for data in layers:
        layout.write_blob(data)
    config = hashed_json({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [d.digest for d in layer_descs]}})
    layout.write_blob(config)
    manifest = hashed_json({
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": Descriptor.for_bytes(mt.OCI_CONFIG, config).to_json(),
        "layers": [d.to_json() for d in layer_descs],
    })
    layout.write_blob(manifest)
    desc = Descriptor.for_bytes(mt.OCI_MANIFEST, manifest, platform=Platform("linux", arch))
    if tag is not None:
        layout.tag(tag, desc)
    return desc


def backdate(layout: Layout, seconds: float = 3600) -> None:
    """Make every blob look old so gc with the default grace period may take it."""
    past = time.time() - seconds
    for path in layout.blobs_dir.iterdir():
        os.utime(path, (past, past))


# ---------------------------------------------------------------- ensure


def test_ensure_creates_a_spec_layout(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "a" / "b")
    assert not lay.exists()
    lay.ensure()
    lay.ensure()  # idempotent
    assert json.loads((lay.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((lay.root / "index.json").read_text())
    assert index == {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    assert lay.blobs_dir.is_dir()
    assert lay.exists()


def test_ensure_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match="not an OCI layout"):
        Layout(tmp_path).ensure()
    assert not (tmp_path / "oci-layout").exists()


def test_ensure_rejects_other_layout_versions(tmp_path: Path) -> None:
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "9.9.9"}')
    with pytest.raises(CacheError, match=r"unsupported imageLayoutVersion '9\.9\.9'"):
        Layout(tmp_path).ensure()


def test_ensure_is_safe_from_many_threads(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "c")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            Layout(lay.root).ensure()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert lay.list_refs() == []
    assert temp_files(lay) == []


# ---------------------------------------------------------------- blobs


def test_write_and_read_blob(layout: Layout) -> None:
    digest = layout.write_blob(b"hello")
    assert digest == sha256_digest(b"hello")
    assert layout.has_blob(digest)
    assert layout.read_blob(digest) == b"hello"
    assert layout.blob_path(digest) == layout.blobs_dir / digest.removeprefix("sha256:")
    assert layout.blob_path(digest).stat().st_mode & 0o777 == 0o644
    # Writing again is a no-op that returns the same digest.
    assert layout.write_blob(b"hello", expected_digest=digest) == digest


def test_write_blob_with_wrong_expected_digest(layout: Layout) -> None:
    with pytest.raises(DigestMismatchError, match="hashes to"):
        layout.write_blob(b"hello", expected_digest=sha256_digest(b"other"))
    assert list(layout.blobs_dir.iterdir()) == []


@pytest.mark.parametrize("bad", [
    "sha256:../../etc/passwd",
    "sha256:" + "A" * 64,
    "sha512:" + "a" * 128,
    "sha256:" + "a" * 63,
    "../" + "a" * 64,
    "",
])
def test_blob_path_rejects_malformed_digests(layout: Layout, bad: str) -> None:
    with pytest.raises(CacheError, match="invalid digest"):
        layout.blob_path(bad)
    with pytest.raises(CacheError):
        layout.has_blob(bad)


def test_ingest_streams_and_verifies(layout: Layout) -> None:
    chunks = [b"a" * 1000, b"b" * 5000, b"", b"c"]
    data = b"".join(chunks)
    path = layout.ingest(iter(chunks), expected_digest=sha256_digest(data), expected_size=len(data))
    assert path.read_bytes() == data
    assert temp_files(layout) == []


def test_failed_ingest_leaves_nothing(layout: Layout) -> None:
    want = sha256_digest(b"good")
    with pytest.raises(DigestMismatchError, match="hashes to"):
        layout.ingest([b"evil"], expected_digest=want)
    with pytest.raises(DigestMismatchError, match="got 4 bytes, expected 5"):
        layout.ingest([b"good"], expected_digest=want, expected_size=5)
    assert not layout.has_blob(want)
    assert list(layout.blobs_dir.iterdir()) == []


def test_ingest_stops_reading_past_the_expected_size(layout: Layout) -> None:
    consumed = 0

    def endless() -> Iterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 1
            yield b"x" * 1024

    with pytest.raises(DigestMismatchError, match="more than the expected 4096 bytes"):
        layout.ingest(endless(), expected_digest=sha256_digest(b"x"), expected_size=4096)
    assert consumed == 5
    assert list(layout.blobs_dir.iterdir()) == []


def test_ingest_that_raises_midway_leaves_nothing(layout: Layout) -> None:
    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise ConnectionError("network went away")

    with pytest.raises(ConnectionError):
        layout.ingest(broken(), expected_digest=sha256_digest(b"partial and more"))
    assert list(layout.blobs_dir.iterdir()) == []


def test_ingest_of_present_blob_does_not_read_and_refreshes_mtime(layout: Layout) -> None:
    digest = layout.write_blob(b"shared layer")
    backdate(layout)

    def must_not_read() -> Iterator[bytes]:
        raise AssertionError("the stream of a present blob must not be consumed")
        yield b""

    layout.ingest(must_not_read(), expected_digest=digest)
    assert time.time() - layout.blob_path(digest).stat().st_mtime < 60


@pytest.mark.parametrize("present", [True, False])
def test_publishing_a_blob_waits_for_a_running_gc(layout: Layout, present: bool) -> None:
    # gc holds the lock exclusively from stat to unlink; claiming a present blob (or
    # renaming a new one into place) must wait, or gc could delete a just-claimed blob.
    if present:
        layout.write_blob(b"layer")
    finished = threading.Event()

    def ingest() -> None:
        layout.ingest([b"layer"], expected_digest=sha256_digest(b"layer"))
        finished.set()

    with layout.locked():
        thread = threading.Thread(target=ingest)
        thread.start()
        assert not finished.wait(0.3)
    thread.join(5)
    assert finished.is_set() and layout.read_blob(sha256_digest(b"layer")) == b"layer"


def test_ingest_file(layout: Layout, tmp_path: Path) -> None:
    src = tmp_path / "layer.tar.gz"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 7))  # more than one copy chunk
    digest = layout.ingest_file(src)
    assert digest == sha256_digest(src.read_bytes())
    assert layout.read_blob(digest) == src.read_bytes()
    assert layout.blob_path(digest).stat().st_ino != src.stat().st_ino  # a copy, not a link
    with pytest.raises(DigestMismatchError):
        layout.ingest_file(src, expected_digest=sha256_digest(b"x"))
    with pytest.raises(CacheError, match="no such file"):
        layout.ingest_file(tmp_path / "missing")
    assert temp_files(layout) == []


def test_read_blob_detects_corruption(layout: Layout) -> None:
    digest = layout.write_blob(b"precious")
    layout.blob_path(digest).write_bytes(b"tampered")
    with pytest.raises(CacheError, match=f"corrupt blob .*{digest.removeprefix('sha256:')}"):
        layout.read_blob(digest)


def test_read_blob_missing_and_size_bound(layout: Layout) -> None:
    with pytest.raises(CacheError, match="not in the cache"):
        layout.read_blob(sha256_digest(b"nothing"))
    digest = layout.write_blob(b"x" * 100)
    with pytest.raises(CacheError, match="over 10"):
        layout.read_blob(digest, max_size=10)


def test_open_blob_reads_and_verifies_at_eof(layout: Layout) -> None:
    data = os.urandom(200_000)
    digest = layout.write_blob(data)
    with layout.open_blob(digest) as f:
        assert f.read(10) == data[:10]
        assert f.read() == data[10:]
    layout.blob_path(digest).write_bytes(data[:-1] + b"\0")
    with layout.open_blob(digest) as f, pytest.raises(CacheError, match="corrupt blob"):
        while f.read(4096):
            pass
    with pytest.raises(CacheError, match="not in the cache"):
        layout.open_blob(sha256_digest(b"none"))


# ---------------------------------------------------------------- refs


def test_tag_resolve_untag(layout: Layout) -> None:
    desc = make_image(layout, None, layers=[b"l1"])
    layout.tag("127.0.0.1:5000/org/img:v1", desc)
    assert layout.resolve("127.0.0.1:5000/org/img:v1") == desc
    assert layout.resolve("127.0.0.1:5000/org/img:v1").platform == Platform("linux", "amd64")  # type: ignore[union-attr]
    assert layout.resolve("other") is None
    entry = json.loads(layout.index_path.read_text())["manifests"][0]
    assert entry["annotations"] == {REF_NAME_ANNOTATION: "127.0.0.1:5000/org/img:v1"}
    assert layout.untag("127.0.0.1:5000/org/img:v1") is True
    assert layout.untag("127.0.0.1:5000/org/img:v1") is False
    assert layout.resolve("127.0.0.1:5000/org/img:v1") is None


def test_tag_replaces_and_keeps_other_annotations(layout: Layout) -> None:
    first = make_image(layout, "img:latest", layers=[b"one"])
    second = make_image(layout, None, layers=[b"two"])
    annotated = Descriptor(second.media_type, second.digest, second.size,
                           annotations={"org.opencontainers.image.created": "1970-01-01T00:00:00Z"})
    layout.tag("img:latest", annotated)
    refs = layout.list_refs()
    assert [name for name, _ in refs] == ["img:latest"]
    assert refs[0][1].digest == second.digest != first.digest
    assert refs[0][1].annotations == {"org.opencontainers.image.created": "1970-01-01T00:00:00Z"}


def test_tag_requires_the_blob(layout: Layout) -> None:
    ghost = Descriptor(mt.OCI_MANIFEST, sha256_digest(b"ghost"), 5)
    with pytest.raises(CacheError, match="not in the cache"):
        layout.tag("ghost", ghost)
    assert layout.list_refs() == []


@pytest.mark.parametrize("bad", ["", "has space", "tab\there", "new\nline", "x" * 2000])
def test_tag_rejects_bad_names(layout: Layout, bad: str) -> None:
    desc = make_image(layout, None, layers=[b"l"])
    with pytest.raises(CacheError, match="invalid ref name"):
        layout.tag(bad, desc)


def test_list_refs_sorted_and_keeps_foreign_entries(layout: Layout) -> None:
    b = make_image(layout, "b", layers=[b"b"])
    a = make_image(layout, "a", layers=[b"a"])
    # An unnamed entry another tool wrote must survive our read-modify-write.
    index = json.loads(layout.index_path.read_text())
    index["manifests"].append({"mediaType": mt.OCI_MANIFEST, "digest": a.digest, "size": a.size})
    index["x-extra"] = "kept"
    layout.index_path.write_text(json.dumps(index))
    layout.tag("c", b)
    assert [(n, d.digest) for n, d in layout.list_refs()] == [("a", a.digest), ("b", b.digest), ("c", b.digest)]
    index = json.loads(layout.index_path.read_text())
    assert index["x-extra"] == "kept"
    assert len(index["manifests"]) == 4


def test_list_refs_of_missing_cache_is_empty(tmp_path: Path) -> None:
    assert Layout(tmp_path / "none").list_refs() == []


@pytest.mark.parametrize("content", ["{", "[]", '{"manifests": {}}', '{"manifests": [1]}',
                                     '{"manifests": [{"digest": "nope", "annotations": {"org.opencontainers.image.ref.name": "x"}}]}'])
def test_corrupt_index_is_a_cache_error_naming_the_file(layout: Layout, content: str) -> None:
    layout.index_path.write_text(content)
    with pytest.raises(CacheError, match=r"corrupt .*index\.json"):
        layout.list_refs()


# ---------------------------------------------------------------- walks, verify, gc


def make_index(layout: Layout, tag: str) -> tuple[Descriptor, list[Descriptor]]:
    amd = make_image(layout, None, layers=[b"common", b"amd"], arch="amd64")
    arm = make_image(layout, None, layers=[b"common", b"arm"], arch="arm64")
    index = hashed_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                            "manifests": [amd.to_json(), arm.to_json()]})
    layout.write_blob(index)
    desc = Descriptor.for_bytes(mt.OCI_INDEX, index)
    layout.tag(tag, desc)
    return desc, [amd, arm]


def test_size_of_counts_shared_blobs_once(layout: Layout) -> None:
    desc, children = make_index(layout, "multi")
    expected = sum(size for _digest, size in layout.iter_blobs())
    assert layout_gc.size_of(layout, desc) == expected == layout.disk_usage()
    assert layout_gc.size_of(layout, children[0]) < expected


def test_verify_healthy_then_each_kind_of_problem(layout: Layout) -> None:
    _desc, (_amd, arm) = make_index(layout, "multi")
    assert layout_gc.verify(layout) == []

    layer = sha256_digest(b"amd")
    layout.blob_path(layer).write_bytes(b"bitrot")
    problems = layout_gc.verify(layout)
    assert len(problems) == 1 and "corrupt blob" in problems[0] and layer.removeprefix("sha256:") in problems[0]

    layout.blob_path(layer).unlink()
    assert layout_gc.verify(layout) == [f"missing blob {layer} ({mt.OCI_LAYER_GZIP})"]

    # A platform manifest of an index may be absent (a pull for one arch), its blobs with it.
    layout.blob_path(arm.digest).unlink()
    assert layout_gc.verify(layout) == [f"missing blob {layer} ({mt.OCI_LAYER_GZIP})"]
    # But a manifest tagged on its own is not optional.
    lone = make_image(layout, "lone", layers=[b"lone"], arch="amd64")
    layout.blob_path(lone.digest).unlink()
    assert f"missing blob {lone.digest} ({mt.OCI_MANIFEST})" in layout_gc.verify(layout)



def test_verify_reports_wrong_size_and_bad_manifest_json(layout: Layout) -> None:
    data = layout.write_blob(b"not json")
    layout.tag("junk", Descriptor(mt.OCI_MANIFEST, data, 999))
    problems = layout_gc.verify(layout)
    assert any("999" in p for p in problems)
    assert any(f"corrupt manifest {data}" in p and "is not valid JSON" in p for p in problems)


def test_walk_visits_each_digest_once(layout: Layout) -> None:
    # Content addressing makes true cycles impossible (a blob cannot name its own digest),
    # but the same child listed twice must be walked and counted once.
    child = make_image(layout, None, layers=[b"x"])
    index = hashed_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                            "manifests": [child.to_json(), child.to_json()]})
    layout.write_blob(index)
    desc = Descriptor.for_bytes(mt.OCI_INDEX, index)
    layout.tag("twice", desc)
    assert layout_gc.verify(layout) == []
    assert layout_gc.reachable(layout) == {desc.digest} | layout_gc.reachable(layout, [child])
    assert len(layout_gc.reachable(layout, [child])) == 3
    assert layout_gc.size_of(layout, desc) == layout.disk_usage()


def test_gc_removes_only_unreachable_old_blobs(layout: Layout) -> None:
    keep, _ = make_index(layout, "keep")
    drop = make_image(layout, "drop", layers=[b"common", b"only-drop"])
    layout.untag("drop")
    stray = layout.write_blob(b"stray, written just now")
    backdate(layout)
    fresh = layout.write_blob(b"fresh, in flight for another process")
    before = {d for d, _ in layout.iter_blobs()}

    removed, freed = layout_gc.gc(layout)
    after = {d for d, _ in layout.iter_blobs()}
    gone = before - after
    assert drop.digest in gone and sha256_digest(b"only-drop") in gone and stray in gone
    assert sha256_digest(b"common") in after  # shared with a kept image
    assert fresh in after  # inside the grace period
    assert removed == len(gone) and freed > 0
    assert layout_gc.verify(layout) == []
    assert layout.resolve("keep") == keep

    assert layout_gc.gc(layout, grace_seconds=0) == (1, len(b"fresh, in flight for another process"))
    assert layout_gc.gc(layout, grace_seconds=0) == (0, 0)


def test_gc_leaves_in_flight_temp_files_and_removes_stale_ones(layout: Layout) -> None:
    live = layout.blobs_dir / f"{TEMP_PREFIX}123-abc"
    live.write_bytes(b"being written")
    stale = layout.blobs_dir / f"{TEMP_PREFIX}456-def"
    stale.write_bytes(b"writer died")
    os.utime(stale, (0, 0))
    index_leftover = layout.root / f"{TEMP_PREFIX}789-aaa"
    index_leftover.write_bytes(b"{")
    os.utime(index_leftover, (0, 0))
    other = layout.blobs_dir / "README"
    other.write_text("not ours")
    os.utime(other, (0, 0))
    assert layout_gc.gc(layout, grace_seconds=0) == (2, len(b"writer died{"))
    assert live.exists() and other.exists() and not stale.exists() and not index_leftover.exists()


def test_gc_refuses_when_a_manifest_is_unreadable(layout: Layout) -> None:
    desc = make_image(layout, "img", layers=[b"layer"])
    layout.blob_path(desc.digest).write_bytes(b"garbage")
    backdate(layout)
    with pytest.raises(CacheError, match="gc stopped, nothing deleted: corrupt blob"):
        layout_gc.gc(layout)
    assert layout.has_blob(sha256_digest(b"layer"))


def test_clear_removes_everything(layout: Layout) -> None:
    make_index(layout, "a")
    total = layout.disk_usage()
    count = len(list(layout.iter_blobs()))
    assert layout_gc.clear(layout) == (count, total)
    assert layout.list_refs() == [] and list(layout.iter_blobs()) == []
    assert layout.exists()


def test_gc_and_clear_on_a_missing_cache(tmp_path: Path) -> None:
    assert layout_gc.gc(Layout(tmp_path / "none")) == (0, 0)
    assert layout_gc.clear(Layout(tmp_path / "none")) == (0, 0)


# ---------------------------------------------------------------- CLI


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                         (5 * 1024**3, "5.0 GiB")])
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


def test_cli_ls(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lay = Layout(cache_dir)
    lay.ensure()
    desc, _ = make_index(lay, "127.0.0.1:5000/org/img:v1")
    single = make_image(lay, "solo", layers=[b"solo layer"])
    assert main(["cache", "ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["REF", "DIGEST", "TYPE", "SIZE"]
    assert lines[1].split()[:3] == ["127.0.0.1:5000/org/img:v1", desc.digest[7:19], "oci-index"]
    assert lines[1].endswith(human_size(layout_gc.size_of(lay, desc)))
    assert lines[2].split()[:3] == ["solo", single.digest[7:19], "oci-manifest"]
    assert lines[3] == f"total: 2 refs, {human_size(lay.disk_usage())} on disk in {cache_dir}"


def test_cli_ls_empty_and_missing(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "ls"]) == 1
    assert capsys.readouterr().err.strip() == f"pkgtool: error: no cache at {cache_dir} (nothing has been stored there yet)"
    Layout(cache_dir).ensure()
    assert main(["--cache-dir", str(cache_dir), "cache", "ls"]) == 0
    assert capsys.readouterr().out == f"total: 0 refs, 0 B on disk in {cache_dir}\n"


def test_cli_corrupt_index_is_one_line(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Layout(cache_dir).ensure()
    (cache_dir / "index.json").write_text('{"manifests": [')
    assert main(["cache", "ls"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"pkgtool: error: corrupt {cache_dir / 'index.json'}: not valid JSON")


def test_cli_rm(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lay = Layout(cache_dir)
    lay.ensure()
    make_index(lay, "keep")
    drop = make_image(lay, "drop", layers=[b"common", b"only in drop"])
    backdate(lay)
    assert main(["cache", "rm", "drop", "absent"]) == 1
    assert "not in the cache" in capsys.readouterr().err and lay.resolve("drop") == drop  # nothing removed

    freed = layout_gc.size_of(lay, drop) - len(b"common")
    assert main(["cache", "rm", "drop"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["untagged drop", f"freed {human_size(freed)} (3 blobs)"]
    assert lay.resolve("drop") is None and layout_gc.verify(lay) == []


def test_cli_rm_keeps_recent_blobs_unless_grace_is_zero(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lay = Layout(cache_dir)
    lay.ensure()
    make_image(lay, "a", layers=[b"a"])
    make_image(lay, "b", layers=[b"b"])
    assert main(["cache", "rm", "a"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "freed 0 B (0 blobs)"
    assert main(["cache", "rm", "b", "--grace", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("(6 blobs)")  # b's 3 + a's 3
    assert list(lay.iter_blobs()) == []


def test_cli_clean(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "clean"]) == 0
    assert "nothing to clean" in capsys.readouterr().out
    lay = Layout(cache_dir)
    lay.ensure()
    make_image(lay, "kept", layers=[b"k"])
    orphan = lay.write_blob(b"orphan")
    backdate(lay)
    assert main(["cache", "clean", "--unreferenced"]) == 0
    assert capsys.readouterr().out == f"freed {human_size(len(b'orphan'))} (1 blob)\n"
    assert not lay.has_blob(orphan) and lay.resolve("kept") is not None

    total = lay.disk_usage()
    assert main(["cache", "clean"]) == 0
    assert capsys.readouterr().out == f"freed {human_size(total)} (3 blobs)\n"
    assert lay.list_refs() == [] and lay.disk_usage() == 0


def test_cli_clean_repairs_a_corrupt_index(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lay = Layout(cache_dir)
    lay.ensure()
    make_image(lay, "x", layers=[b"x"])
    lay.index_path.write_text("garbage")
    assert main(["cache", "clean"]) == 0
    assert lay.list_refs() == [] and layout_gc.verify(lay) == []


def test_cli_cache_without_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache"]) == 2
    assert "missing subcommand" in capsys.readouterr().err


def test_cli_ls_marks_a_corrupt_ref_and_rm_explains_gc(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lay = Layout(cache_dir)
    lay.ensure()
    broken = make_image(lay, "broken", layers=[b"b"])
    make_image(lay, "fine", layers=[b"f"])
    lay.blob_path(broken.digest).write_bytes(b"not the manifest")
    assert main(["cache", "ls"]) == 0
    rows = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert rows["broken"] == "corrupt" and rows["fine"].endswith("B")
    assert main(["cache", "rm", "fine"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gc stopped, nothing deleted: corrupt blob" in err
    assert main(["cache", "rm", "broken", "--grace", "0"]) == 0
    assert lay.list_refs() == [] and lay.disk_usage() == 0
