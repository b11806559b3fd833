"""Checks that a local path can be written, made before any work so a late failure never loses a run."""

from __future__ import annotations

import os
import tempfile


def check_can_write_under(path: str | os.PathLike) -> None:
    """Raise ValueError unless `path` is, or can be made as, something inside a folder this process can write.

    Probes by making and removing an empty temporary folder in the nearest existing ancestor, so nothing is
    left behind (as root, permission bits alone would say yes to /proc or a read-only mount's folders).
    """
    folder = os.path.abspath(os.fspath(path))
    while not os.path.lexists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tune_adder-probe-", dir=folder))
    except OSError as e:
        raise ValueError(f"cannot write in {folder} ({e.strerror})") from None
