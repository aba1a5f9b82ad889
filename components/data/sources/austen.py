"""Jane Austen's six completed novels, read from Debian's ``r-cran-janeaustenr`` package without R.

    from components.data.sources import austen, locate_austen, read_rdb

    corpus = austen()                        # found in Debian's package dir or the cache
    corpus = austen("/opt/janeaustenr")      # the package root or its data/ folder
    [d.name for d in corpus.documents]       # ["emma", "mansfieldpark", ..., "sensesensibility"]
    read_rdb(locate_austen())["emma"][:3]    # the raw lines; None where R has NA

The package stores the texts in an R lazy-load database: ``Rdata.rdx`` is one serialised R object
(gzip'd, or 4-byte length + zlib) whose ``variables`` element maps each object name to an
(offset, length) record in ``Rdata.rdb``; each record is a 4-byte big-endian uncompressed length and
a zlib stream of one serialised object, here a character vector of lines.  ``unserialize`` reads R's
XDR serialisation format (versions 2 and 3) for the types such databases of data use.  Without
root, fetch the package with ``apt-get download r-cran-janeaustenr`` and unpack it with
``dpkg -x r-cran-janeaustenr_*.deb ~/.cache/visionray/janeaustenr``; installing it would pull in R.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from components.data.errors import DataError
from components.data.sources.common import default_cache_dir
from components.data.text import TextCorpus, TextDocument, content_fingerprint

__all__ = ["DEBIAN_JANEAUSTENR_DIR", "austen", "locate_austen", "read_rdb", "unserialize"]

DEBIAN_JANEAUSTENR_DIR = Path("/usr/lib/R/site-library/janeaustenr")
_DEB_LAYOUT = Path("usr/lib/R/site-library/janeaustenr")  # where dpkg -x puts the package root

# R's SEXP type codes and flag bits (R's serialize.c).
NILVALUE, SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP, EXPRSXP, REFSXP = (
    254, 1, 2, 9, 10, 13, 14, 16, 19, 20, 255)
_HAS_ATTR, _HAS_TAG = 1 << 9, 1 << 10
_LATIN1 = 1 << 2  # CHARSXP levels bit; anything else is UTF-8 or ASCII in these files
_NA_INT = -(2**31)


class _Reader:
    def __init__(self, buf: bytes, name: str):
        self.buf, self.name, self.pos, self.refs = buf, name, 0, []

    def fail(self, what: str) -> DataError:
        return DataError(f"R data {self.name} {what} (at byte {self.pos}).")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail("is truncated")
        self.pos += n
        return self.buf[self.pos - n:self.pos]

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        return n if n != -1 else (self.int() << 32) + (self.int() & 0xFFFFFFFF)  # R's long vectors

    def item(self) -> Any:
        flags = self.int()
        kind = flags & 0xFF
        if kind == NILVALUE:
            return None
        if kind == REFSXP:
            index = (flags >> 8) or self.int()
            if not 0 < index <= len(self.refs):
                raise self.fail(f"refers to object {index} it has not defined")
            return self.refs[index - 1]
        if kind == SYMSXP:
            name = self.item()  # the symbol's CHARSXP; later uses of it are REFSXPs
            self.refs.append(name)
            return name
        if kind == LISTSXP:
            return self.pairlist(flags)
        if kind == CHARSXP:
            n = self.int()
            encoding = "latin-1" if flags >> 12 & _LATIN1 else "utf-8"
            return None if n == -1 else self.take(n).decode(encoding, "replace")
        value: Any
        if kind in (LGLSXP, INTSXP, REALSXP):
            n = self.length()
            size = 8 if kind == REALSXP else 4
            value = np.frombuffer(self.take(n * size), dtype=">f8" if size == 8 else ">i4").astype(
                np.float64 if size == 8 else np.int32)
            if kind == LGLSXP:
                value = [None if v == _NA_INT else bool(v) for v in value.tolist()]
        elif kind in (STRSXP, VECSXP, EXPRSXP):
            value = [self.item() for _ in range(self.length())]
        else:
            raise self.fail(f"holds R type {kind}, which this reader does not handle")
        attributes = self.item() if flags & _HAS_ATTR else None
        names = attributes.get("names") if isinstance(attributes, dict) else None
        if kind in (VECSXP, EXPRSXP) and isinstance(names, list) and len(names) == len(value):
            return dict(zip(names, value))  # a named list
        return value

    def pairlist(self, flags: int) -> dict:
        """A pairlist (how R stores attributes) as {tag: value}; untagged cells are keyed by position.
        Walked in a loop, not by recursing on the CDR, so long pairlists cannot overflow the stack."""
        out: dict = {}
        while flags & 0xFF == LISTSXP:
            if flags & _HAS_ATTR:
                self.item()
            tag = self.item() if flags & _HAS_TAG else None
            out[tag if tag is not None else len(out)] = self.item()
            flags = self.int()
        if flags & 0xFF != NILVALUE:
            raise self.fail("has a pairlist that does not end in NULL")
        return out


def unserialize(buf: bytes, *, name: str = "<bytes>") -> Any:
    """One R object from XDR-serialised bytes (what ``serialize()``/``saveRDS`` write, uncompressed).

    NULL -> None, character -> list[str | None], logical -> list[bool | None], integer/double ->
    np.int32/np.float64 arrays (NA stays R's sentinel), list -> list, or dict when it has names.
    """
    reader = _Reader(buf, name)
    if reader.take(2) != b"X\n":
        raise reader.fail("is not in R's XDR serialisation format (it does not start with 'X\\n')")
    version = reader.int()
    reader.take(8)  # the R versions that wrote it and can read it
    if version == 3:
        reader.take(reader.int())  # the native encoding, "UTF-8" here; CHARSXPs carry their own
    elif version != 2:
        raise reader.fail(f"uses serialisation version {version}; only 2 and 3 are read")
    return reader.item()


def _inflate(data: bytes, name: str, method: int | None = None) -> bytes:
    """A saveRDS file (gzip, bzip2, xz or plain; else framed like a record) when ``method`` is None, or a
    lazy-load record: a 4-byte length, then zlib (``method`` 1) or, for ``method`` 2 and 3, a byte naming
    the compressor (Z, 2, X or 0 for none) and its stream."""
    try:
        if method is None:
            for magic, decompress in ((b"\x1f\x8b", gzip.decompress), (b"BZh", bz2.decompress),
                                      (b"\xfd7zXZ\x00", lzma.decompress), (b"X\n", bytes)):
                if data.startswith(magic):
                    return decompress(data)
        size, body, kind = struct.unpack(">I", data[:4])[0], data[4:], b"Z"
        if method in (2, 3):
            kind, body = data[4:5], data[5:]
        out = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes}[kind](body)
    except (OSError, EOFError, KeyError, struct.error, zlib.error, lzma.LZMAError, ValueError) as err:
        raise DataError(f"R data {name} is truncated or corrupt ({err}).") from err
    if len(out) != size:
        raise DataError(f"R data {name} is corrupt: it promises {size} bytes but holds {len(out)}.")
    return out


def _data_dir(root: Path) -> Path | None:
    for directory in (root, root / "data", root / _DEB_LAYOUT / "data"):
        if (directory / "Rdata.rdb").is_file() and (directory / "Rdata.rdx").is_file():
            return directory
    return None


def locate_austen(path: str | Path | None = None) -> Path:
    """The ``data/`` folder holding ``Rdata.rdb``/``Rdata.rdx``: under ``path`` if given (the package
    root, its data/ folder, or a ``dpkg -x`` target), else Debian's package dir, else the cache
    ``<default_cache_dir()>/janeaustenr`` (as a ``dpkg -x`` target or the package root itself)."""
    if path is not None:
        found = _data_dir(Path(path).expanduser())
        if found is None:
            raise DataError(f"janeaustenr path {path} holds no data/Rdata.rdb and data/Rdata.rdx.")
        return found
    cache = default_cache_dir() / "janeaustenr"
    for root in (DEBIAN_JANEAUSTENR_DIR, cache):
        if (found := _data_dir(root)) is not None:
            return found
    raise DataError(f"Jane Austen's novels are not in {DEBIAN_JANEAUSTENR_DIR} or {cache}; run `make data`, or "
                    f"`apt-get download r-cran-janeaustenr && dpkg -x r-cran-janeaustenr_*.deb {cache}`.")


def read_rdb(data_dir: str | Path) -> dict[str, Any]:
    """Every object of the lazy-load database ``data_dir/Rdata.{rdx,rdb}`` by name, in the index's order
    (character vectors, as in janeaustenr, come back as ``list[str | None]``)."""
    rdx, rdb = Path(data_dir) / "Rdata.rdx", Path(data_dir) / "Rdata.rdb"
    try:
        index, blob = rdx.read_bytes(), rdb.read_bytes()
    except OSError as err:
        raise DataError(f"Could not read R lazy-load database {rdb} ({err}).") from err
    index = unserialize(_inflate(index, str(rdx)), name=str(rdx))
    if not isinstance(index, dict) or not isinstance(index.get("variables"), dict):
        raise DataError(f"R index {rdx} has no named 'variables' list, so it is not a lazy-load index.")
    method = int((index.get("compressed") or [True])[0])  # TRUE (1) is zlib; 2 and 3 tag each record
    objects = {}
    for name, where in index["variables"].items():
        offset, length = (int(v) for v in where)
        if offset < 0 or offset + length > len(blob):
            raise DataError(f"R database {rdb} is truncated: object {name!r} lies beyond its end.")
        label = f"{rdb} (object {name!r})"
        objects[name] = unserialize(_inflate(blob[offset:offset + length], label, method), name=label)
    return objects


def austen(path: str | Path | None = None) -> TextCorpus:
    """The novels as a ``TextCorpus`` named "austen": one document per R object, in the index's order,
    lines joined with "\\n" and NA lines kept as empty lines."""
    data_dir = locate_austen(path)
    documents = []
    for name, lines in read_rdb(data_dir).items():
        if not isinstance(lines, list) or not all(line is None or isinstance(line, str) for line in lines):
            raise DataError(f"Object {name!r} in {data_dir / 'Rdata.rdb'} is not a character vector of lines.")
        documents.append(TextDocument(name, "\n".join(line or "" for line in lines)))
    if not documents:
        raise DataError(f"R database {data_dir / 'Rdata.rdb'} holds no objects.")
    return TextCorpus("austen", tuple(documents), str(data_dir / "Rdata.rdb"), content_fingerprint(documents))
