"""Plain progress lines on stderr, for the commands that need no live view (see
:mod:`pkgtool.progress` for the BuildKit-style one).  Kept apart from it because a small
``pkgtool image build`` should not pay for importing the live view."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable


def line_printer(prefix: str) -> Callable[[str], None]:
    """A reporter of ``prefix: message`` lines.  Each line goes out in one write under a lock:
    ``print`` writes the text and its newline separately, and two threads reporting at once
    (segment compression runs beside the tree walk) would otherwise interleave them."""
    lock = threading.Lock()

    def report(message: str) -> None:
        with lock:
            sys.stderr.write(f"{prefix}: {message}\n")
            sys.stderr.flush()

    return report
