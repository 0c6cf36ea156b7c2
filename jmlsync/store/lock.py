"""One serving process per SQLite store: an exclusive ``flock`` on ``<store>.lock``.

SQLite itself would let a second ``serve`` open the file and run a second scheduler and worker
pool on it. The lock is the operating system's: it goes with the process, however it ends, so a
crash never leaves a stale lock behind. Commands that only read (``status``, ``explain``,
``sla-report``...) do not take it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class StoreLocked(Exception):
    """Another process serves from this store."""


def lock_path(store_path: Path) -> Path:
    """The lock file beside the store."""
    return store_path.with_name(store_path.name + ".lock")


@contextmanager
def exclusive(store_path: Path) -> Iterator[Path]:
    """Hold the store's lock until the block ends; raise :class:`StoreLocked` if it is held."""
    path = lock_path(store_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            raise StoreLocked(
                f"{store_path} is already served by process {holder} (it holds {path});"
                " stop it first, or give this one its own [store].url"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)
