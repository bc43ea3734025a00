"""Where datasets are looked for, and the checksum helpers shared by loaders and downloads."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from medssl_core.common.atomic import write_atomic


def data_dirs(explicit: str | os.PathLike | None = None) -> list[Path]:
    """Lookup order: --data-dir, $MEDSSL_DATA, ~/.medmnist (the medmnist package's own cache)."""
    dirs = []
    if explicit:
        dirs.append(Path(explicit).expanduser())
    if os.environ.get("MEDSSL_DATA"):
        dirs.append(Path(os.environ["MEDSSL_DATA"]).expanduser())
    dirs.append(Path("~/.medmnist").expanduser())
    seen, out = set(), []
    for d in dirs:
        key = str(d.resolve()) if d.exists() else str(d)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def download_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The first directory of the lookup order that downloads go to."""
    return data_dirs(explicit)[0]


def cache_dir() -> Path:
    root = Path(os.environ.get("MEDSSL_CACHE", "~/.cache/medssl")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_md5s(paths: list[Path]) -> dict[Path, str]:
    """MD5 of each file, remembered per (path, size, mtime, ctime) so large files are hashed once; one cache read and
    at most one write per call, however many files."""
    store = cache_dir() / "md5.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    out, added = {}, False
    for path in paths:
        path = Path(path).resolve()
        stat = path.stat()
        # ctime too: a rewrite always changes it, even one that keeps the size and resets the mtime (cp -p)
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
        if key not in known:
            known[key] = md5_file(path)
            added = True
        out[path] = known[key]
    if added:
        write_atomic(store, json.dumps(known))
    return out


def cached_md5(path: Path) -> str:
    return next(iter(cached_md5s([path]).values()))
