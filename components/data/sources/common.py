"""What the source readers share: the download cache folder and checksum-verified downloads.

    from components.data.sources.common import default_cache_dir, download_verified, file_digest

    default_cache_dir()                                   # $VISIONRAY_DATA or ~/.cache/visionray
    download_verified("file:///mirror/x.gz", default_cache_dir() / "x.gz", digest="<sha256>")
    file_digest("x.gz", gunzip=True)                      # sha256 of the gunzipped content

A download goes to a hidden temp file next to its destination and is renamed into place only
once its checksum matches, so a cache never holds a half file.  ``fashion_mnist`` and
``cifar10`` download through here; nothing in this package downloads unless asked.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Callable

from components.data.errors import DataError

__all__ = ["default_cache_dir", "download_verified", "file_digest"]

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """Where downloads land when no directory is given: ``$VISIONRAY_DATA`` or ``~/.cache/visionray``."""
    env = os.environ.get("VISIONRAY_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "visionray"


def file_digest(path: str | Path, algorithm: str = "sha256", *, gunzip: bool = False) -> str:
    """Hex digest of a file's bytes, or of its gunzipped payload when ``gunzip=True``.

    Hashing the payload rather than the .gz bytes matters for Fashion-MNIST: the Debian
    package re-compressed the official files, so the .gz bytes differ while the IDX
    content is identical.
    """
    digest = hashlib.new(algorithm)
    path = Path(path)
    try:
        opener: Callable[[], Any] = (lambda: gzip.open(path, "rb")) if gunzip else (lambda: path.open("rb"))
        with opener() as stream:
            for block in iter(lambda: stream.read(_CHUNK), b""):
                digest.update(block)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"Could not read {path} to check its {algorithm} checksum ({err}).") from err
    return digest.hexdigest()


def download_verified(
    url: str,
    dest: str | Path,
    *,
    digest: str,
    algorithm: str = "sha256",
    gunzip: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` and keep it only if its checksum equals ``digest``.

    The bytes go to a hidden temp file next to ``dest`` and are renamed into place only
    after the hash matches, so an interrupted or tampered download never leaves a file
    that later looks valid.  An existing ``dest`` that already verifies is reused.
    ``file://`` URLs work too (handy for mirrors and tests).
    """
    dest = Path(dest)
    if dest.is_file() and file_digest(dest, algorithm, gunzip=gunzip) == digest:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    shutil.copyfileobj(response, out, _CHUNK)
            except (urllib.error.URLError, OSError, ValueError) as err:
                raise DataError(f"Could not download {url} ({err}).") from err
            out.flush()
            os.fsync(out.fileno())
        try:
            actual = file_digest(tmp, algorithm, gunzip=gunzip)
        except DataError as err:
            raise DataError(f"Download of {url} is not a valid gzip file ({err.__cause__}).") from err
        if actual != digest:
            what = f"{algorithm} of the gunzipped content" if gunzip else algorithm
            raise DataError(
                f"Download of {url} failed verification: expected {what} {digest}, got {actual}."
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
