"""The user-data CD-ROM of ``pkgtool run qemu --data STRING`` / ``--data-file FILE``.

An ISO 9660 image labelled ``cidata`` (cloud-init's NoCloud convention, which
``pkg/metadata`` reads) holding ``user-data`` (the data, byte for byte) and an empty
``meta-data`` (NoCloud's other file, which cloud-init insists on).  QEMU attaches it as a
read-only SCSI CD-ROM.

Reproducible: ``xorriso`` with ``SOURCE_DATE_EPOCH`` (default 0) for every date it records,
the files' own times set to it, a fixed volume id; the same data gives the same bytes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pkgtool.assemble.cpio import source_date_epoch
from pkgtool.assemble.formats.hosttools import require_tool, run
from pkgtool.errors import UsageError

VOLUME_ID = "cidata"


def read_data(*, data: str | None, data_file: str | None) -> bytes | None:
    """The user data from ``--data`` or ``--data-file`` (one of them at most), or None."""
    if data is not None and data_file is not None:
        raise UsageError("--data and --data-file are exclusive: give one")
    if data is not None:
        return data.encode()
    if data_file is None:
        return None
    path = Path(data_file).expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"--data-file {data_file}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--data-file {data_file}: is a directory") from None
    except OSError as exc:
        raise UsageError(f"--data-file {data_file}: cannot read it ({exc.strerror or exc})") from None


def write_cidata(data: bytes, dest: Path, *, mtime: int | None = None) -> Path:
    """``dest``: the ISO with ``data`` as ``user-data``, written atomically."""
    require_tool("xorriso", "xorriso", purpose="--data")
    when = mtime if mtime is not None else source_date_epoch(0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".cidata-", dir=dest.parent) as work:
        root = Path(work) / "root"
        root.mkdir()
        (root / "user-data").write_bytes(data)
        (root / "meta-data").write_bytes(b"")
        for path in (root / "user-data", root / "meta-data", root):
            os.utime(path, (when, when))
        partial = Path(work) / "cidata.iso"
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(when)}
        run(["xorriso", "-as", "mkisofs", "-quiet", "-o", partial, "-V", VOLUME_ID, "-R", "-J", root],
            what="--data", env=env)
        partial.replace(dest)
    return dest
