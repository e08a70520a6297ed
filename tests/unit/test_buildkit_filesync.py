"""fsutil DiffCopy: Go file modes, entry order, and the sender/receiver state machines."""

from __future__ import annotations

import os
import queue
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgtool.buildkit import filesync
from pkgtool.buildkit.filesync import (
    GO_MODE_CHAR_DEVICE,
    GO_MODE_DEVICE,
    GO_MODE_DIR,
    GO_MODE_NAMED_PIPE,
    GO_MODE_SETGID,
    GO_MODE_SETUID,
    GO_MODE_STICKY,
    GO_MODE_SYMLINK,
    DiffCopyReceiver,
    DiffCopySender,
    Packet,
    Stat,
    go_file_mode,
    make_stats,
    path_key,
    posix_mode,
)
from pkgtool.errors import PkgtoolError
from pkgtool.fswalk import walk


@pytest.mark.parametrize(
    ("st_mode", "go_mode"),
    [
        (stat.S_IFREG | 0o644, 0o644),
        (stat.S_IFREG | 0o4755, GO_MODE_SETUID | 0o755),
        (stat.S_IFREG | 0o2755, GO_MODE_SETGID | 0o755),
        (stat.S_IFDIR | 0o755, GO_MODE_DIR | 0o755),
        (stat.S_IFDIR | 0o1777, GO_MODE_DIR | GO_MODE_STICKY | 0o777),
        (stat.S_IFLNK | 0o777, GO_MODE_SYMLINK | 0o777),
        (stat.S_IFCHR | 0o666, GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE | 0o666),
        (stat.S_IFBLK | 0o660, GO_MODE_DEVICE | 0o660),
        (stat.S_IFIFO | 0o600, GO_MODE_NAMED_PIPE | 0o600),
    ],
)
def test_go_file_mode_round_trips(st_mode: int, go_mode: int) -> None:
    assert go_file_mode(st_mode) == go_mode
    assert posix_mode(go_mode) == st_mode


def test_go_mode_constants_match_go() -> None:
    # Values of Go's os.ModeDir and os.ModeSymlink: BuildKit decodes them as such.
    assert GO_MODE_DIR == 0x80000000
    assert GO_MODE_SYMLINK == 0x8000000


def test_path_key_orders_like_fsutil() -> None:
    names = ["a-b", "a/x", "b", "a", "a/x/y", "B", "é", "a b"]
    assert sorted(names, key=path_key) == ["B", "a", "a/x", "a/x/y", "a b", "a-b", "b", "é"]


def make_tree(root: Path) -> None:
    (root / "a").mkdir(parents=True)
    (root / "a" / "x").write_bytes(b"x" * 100_000)
    (root / "a-b").write_text("dash")
    (root / "sp ace ü").write_text("unicode")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    os.symlink("a/x", root / "link")
    os.link(root / "a-b", root / "hard")
    (root / "empty").mkdir()


def test_make_stats_order_modes_and_links(tmp_path: Path) -> None:
    make_tree(tmp_path)
    stats = [msg for msg, _entry in make_stats(walk(tmp_path))]
    paths = [s.path for s in stats]
    assert paths == ["a", "a/x", "a-b", "empty", "hard", "link", "run.sh", "sp ace ü"]
    assert paths == sorted(paths, key=path_key)
    by_path = {s.path: s for s in stats}
    assert by_path["a"].mode == GO_MODE_DIR | 0o755
    assert by_path["a/x"].size == 100_000
    assert by_path["run.sh"].mode == 0o755
    assert by_path["link"].mode & GO_MODE_SYMLINK and by_path["link"].linkname == "a/x"
    # The second name of a hardlinked file points at the first, with no data of its own.
    assert by_path["a-b"].linkname == "" and by_path["a-b"].size == 4
    assert by_path["hard"].linkname == "a-b" and by_path["hard"].size == 0
    assert by_path["a/x"].modTime == (tmp_path / "a" / "x").stat().st_mtime_ns


def run_sender(root: Path, incoming: list[Packet]) -> list[Packet]:
    return list(DiffCopySender(root, walk(root)).run(iter(incoming)))


def test_sender_lists_then_serves_requests_in_chunks(tmp_path: Path) -> None:
    make_tree(tmp_path)
    out = run_sender(tmp_path, [Packet(type=Packet.PACKET_REQ, ID=1), Packet(type=Packet.PACKET_FIN)])
    stats = [p for p in out if p.type == Packet.PACKET_STAT]
    assert [p.stat.path for p in stats[:-1]][:2] == ["a", "a/x"]
    assert not stats[-1].HasField("stat")  # the empty STAT ends the list
    data = [p for p in out if p.type == Packet.PACKET_DATA]
    assert all(p.ID == 1 for p in data)
    assert [len(p.data) for p in data] == [32768, 32768, 32768, 100_000 - 3 * 32768, 0]
    assert out[-1].type == Packet.PACKET_FIN
    assert out.index(stats[-1]) < out.index(data[0])


def test_sender_rejects_requests_for_non_files(tmp_path: Path) -> None:
    make_tree(tmp_path)
    with pytest.raises(PkgtoolError, match="unknown file id 0"):
        run_sender(tmp_path, [Packet(type=Packet.PACKET_REQ, ID=0)])  # 0 is the dir "a"
    with pytest.raises(PkgtoolError, match="unknown file id 4"):
        run_sender(tmp_path, [Packet(type=Packet.PACKET_REQ, ID=4)])  # "hard": a link, no data


def test_sender_aborts_on_err(tmp_path: Path) -> None:
    make_tree(tmp_path)
    with pytest.raises(PkgtoolError, match=r"aborted the transfer.*disk full"):
        run_sender(tmp_path, [Packet(type=Packet.PACKET_ERR, data=b"disk full")])


def _queue_iter(q: queue.Queue[bytes | None]) -> Iterator[Packet]:
    while (raw := q.get()) is not None:
        yield Packet.FromString(raw)


def loopback(src: Path, dest: Path) -> filesync.SendStats:
    """Run our sender against our receiver over serialized packets, like the wire does."""
    to_receiver: queue.Queue[bytes | None] = queue.Queue()
    to_sender: queue.Queue[bytes | None] = queue.Queue()
    sender = DiffCopySender(src, walk(src))

    def send() -> None:
        try:
            for pkt in sender.run(_queue_iter(to_sender)):
                to_receiver.put(pkt.SerializeToString())
        finally:
            to_receiver.put(None)

    thread = threading.Thread(target=send)
    thread.start()
    try:
        for pkt in DiffCopyReceiver(dest).run(_queue_iter(to_receiver)):
            to_sender.put(pkt.SerializeToString())
    finally:
        to_sender.put(None)
        thread.join()
    return sender.stats


def test_sender_and_receiver_round_trip_a_tree(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_tree(src)
    os.utime(src / "a", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    sent = loopback(src, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == sorted(
        p.relative_to(src).as_posix() for p in src.rglob("*")
    )
    assert (dest / "a" / "x").read_bytes() == (src / "a" / "x").read_bytes()
    assert os.readlink(dest / "link") == "a/x"
    assert (dest / "hard").stat().st_ino == (dest / "a-b").stat().st_ino
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755
    assert (dest / "a").stat().st_mtime_ns == 1_600_000_000_000_000_000
    assert (dest / "sp ace ü").read_text() == "unicode"
    # Files requested: a/x, a-b, run.sh, "sp ace ü" (not the hardlink or symlink).
    assert sent.files_requested == 4
    assert sent.bytes_sent == 100_000 + 4 + 10 + 7


def _receive(dest: Path, stats: list[Stat]) -> None:
    packets = [Packet(type=Packet.PACKET_STAT, stat=s) for s in stats] + [Packet(type=Packet.PACKET_STAT)]
    for _ in DiffCopyReceiver(dest).run(iter(packets)):
        pass


@pytest.mark.parametrize("path", ["../evil", "/abs", "a/../../b", "a//b", "./a"])
def test_receiver_rejects_unsafe_paths(tmp_path: Path, path: str) -> None:
    with pytest.raises(PkgtoolError, match="unsafe path"):
        _receive(tmp_path / "out", [Stat(path=path, mode=0o644)])
    assert not (tmp_path / "evil").exists()


def test_receiver_never_writes_below_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    stats = [
        Stat(path="link", mode=GO_MODE_SYMLINK | 0o777, linkname=str(outside)),
        Stat(path="link/file", mode=0o644),
    ]
    with pytest.raises(PkgtoolError, match="before its directory"):
        _receive(tmp_path / "out", stats)
    assert list(outside.iterdir()) == []


def test_receiver_rejects_hardlink_to_nothing(tmp_path: Path) -> None:
    with pytest.raises(PkgtoolError, match="hardlink to a non-file"):
        _receive(tmp_path / "out", [Stat(path="h", mode=0o644, linkname="missing")])
