"""Downloads: streamed with a progress bar, MD5-verified, written atomically (temp file + rename)."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from medssl_core.common.atomic import atomic_file
from medssl_core.common.errors import DataError


def download(url: str, dest: Path, md5: str | None, *, progress: bool = True, timeout: float = 60) -> Path:
    """Fetch ``url`` into ``dest``. Nothing is left at ``dest`` unless the checksum matched."""
    dest = Path(dest)
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_file(dest) as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
            if total is not None and out.tell() != total:
                raise DataError(f"Download of {url} stopped after {out.tell()} of {total} bytes; run it again.")
            if md5 is not None and digest.hexdigest() != md5:  # inside: the file is not kept
                raise DataError(
                    f"Downloaded {url} but its MD5 is {digest.hexdigest()}, expected {md5}: the file on the server "
                    "differs from the registered release. Nothing was written; check the URL or mirror."
                )
        return dest
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise DataError(
            f"Could not download {url}: {exc}. Check your internet connection, or download the file by hand "
            f"into {dest.parent} (or set MEDSSL_MIRROR to a mirror that serves the same file names)."
        ) from exc
