"""The one way medssl writes a file that others read: temp file beside it, fsync, rename."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a path (DuckDB's COPY); on a clean exit what
    was written there replaces ``path`` whole, on an error nothing is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file; on a clean exit it replaces ``path`` whole, on an error nothing is left behind."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
