"""Unit tests for the text data sources: the R lazy-load reader, text_files, the position split, Vocabulary.

The R database is one this file writes itself with a tiny R serialiser, in the same format as
Debian's r-cran-janeaustenr; the one check against the real package is skipped when it is absent.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from components.data.errors import DataError
from components.data.sources import (
    austen,
    load_text_source,
    locate_austen,
    read_rdb,
    text_files,
    unserialize,
)
from components.data.text import (
    TextCorpus,
    TextDocument,
    Vocabulary,
    content_fingerprint,
    split_by_position,
)

# --- a tiny R serialiser (XDR, version 3): just what a lazy-load database of character vectors uses --------

_HEADER = b"X\n" + struct.pack(">4i", 3, 0x040201, 0x030500, 5) + b"UTF-8"


def _i(*values: int) -> bytes:
    return struct.pack(f">{len(values)}i", *values)


def _charsxp(s: str | None) -> bytes:
    if s is None:
        return _i(9, -1)  # NA_STRING
    data = s.encode()
    return _i(9 | (64 if s.isascii() else 8) << 12, len(data)) + data  # ASCII / UTF8 levels, as R writes


def _strsxp(lines: list[str | None]) -> bytes:
    return _i(16, len(lines)) + b"".join(map(_charsxp, lines))


def _symbol(name: str, symbols: list[str]) -> bytes:
    if name in symbols:  # R writes a symbol once, then refers back to it
        return _i((symbols.index(name) + 1) << 8 | 255)
    symbols.append(name)
    return _i(1) + _charsxp(name)


def _named_list(items: dict[str, bytes], symbols: list[str]) -> bytes:
    """A VECSXP with the ATTR flag, then its attributes: the pairlist (names = <STRSXP>)."""
    body = _i(19 | 1 << 9, len(items)) + b"".join(items.values())
    return body + _i(2 | 1 << 10) + _symbol("names", symbols) + _strsxp(list(items)) + _i(254)


def _write_db(directory: Path, objects: dict[str, list[str | None]], *, gzip_index: bool = True) -> Path:
    blob, where, symbols = b"", {}, []
    for name, lines in objects.items():
        payload = _HEADER + _strsxp(lines)
        record = struct.pack(">I", len(payload)) + zlib.compress(payload)
        where[name] = _i(13, 2, len(blob), len(record))  # integer vector (offset, length)
        blob += record
    index = _HEADER + _named_list({"variables": _named_list(where, symbols),
                                   "references": _named_list({}, symbols),
                                   "compressed": _i(10, 1, 1)}, symbols)
    directory.mkdir(parents=True)
    (directory / "Rdata.rdb").write_bytes(blob)
    framed = gzip.compress(index) if gzip_index else struct.pack(">I", len(index)) + zlib.compress(index)
    (directory / "Rdata.rdx").write_bytes(framed)
    return directory


NOVELS = {"zeta": ["Chapter 1", None, "Café costs £3."], "alpha": ["The end."]}


# --- the R reader ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gzip_index", [True, False])
def test_read_rdb_returns_objects_in_index_order(tmp_path: Path, gzip_index: bool) -> None:
    data = _write_db(tmp_path / "pkg" / "data", NOVELS, gzip_index=gzip_index)
    objects = read_rdb(data)
    assert list(objects) == ["zeta", "alpha"] and objects == NOVELS


def test_unserialize_maps_named_lists_refs_and_vectors() -> None:
    symbols: list[str] = []
    inner = _named_list({"n": _i(13, 2, 7, -5)}, symbols)
    value = unserialize(_HEADER + _named_list({"inner": inner, "flag": _i(10, 2, 0, -(2**31))}, symbols))
    assert value["flag"] == [False, None]
    np.testing.assert_array_equal(value["inner"]["n"], [7, -5])
    with pytest.raises(DataError, match="XDR"):
        unserialize(b"A\n" + _HEADER[2:])
    with pytest.raises(DataError, match="truncated"):
        unserialize(_HEADER + _strsxp(["abc"])[:-1])
    with pytest.raises(DataError, match="R type 6"):
        unserialize(_HEADER + _i(6))


def test_austen_joins_lines_and_locates_every_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "pkg"
    _write_db(root / "data", NOVELS)
    corpus = austen(root)
    assert [d.name for d in corpus.documents] == ["zeta", "alpha"]
    assert corpus.documents[0].text == "Chapter 1\n\nCafé costs £3."  # the NA line is an empty line
    assert corpus.name == "austen" and corpus.characters == 25 + 8
    assert corpus.fingerprint == content_fingerprint(corpus.documents) == austen(root / "data").fingerprint
    assert locate_austen(root) == locate_austen(root / "data") == root / "data"

    # Not found: the message says how to get the package.
    # components.data.sources.austen is the reader function, so patch its module through sys.modules.
    monkeypatch.setattr(sys.modules[austen.__module__], "DEBIAN_JANEAUSTENR_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("VISIONRAY_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="apt-get download r-cran-janeaustenr"):
        locate_austen()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nowhere"))):
        locate_austen(tmp_path / "nowhere")
    # `dpkg -x r-cran-janeaustenr_*.deb $VISIONRAY_DATA/janeaustenr` is found without a path.
    deb = _write_db(tmp_path / "cache/janeaustenr/usr/lib/R/site-library/janeaustenr/data", NOVELS)
    assert locate_austen() == deb and load_text_source("austen").fingerprint == corpus.fingerprint


def test_truncated_rdb_names_the_file(tmp_path: Path) -> None:
    data = _write_db(tmp_path / "data", NOVELS)
    rdb = data / "Rdata.rdb"
    rdb.write_bytes(rdb.read_bytes()[:-10])
    with pytest.raises(DataError, match=re.escape(str(rdb))):
        read_rdb(data)


def test_real_janeaustenr_package() -> None:
    try:
        data = locate_austen()
    except DataError:
        pytest.skip("r-cran-janeaustenr not found (Debian package dir or the cache)")
    corpus = austen(data)
    assert len(corpus.documents) == 6 and corpus.documents[0].name == "emma"
    assert 3_900_000 <= corpus.characters <= 4_200_000


# --- text_files -----------------------------------------------------------------------------------------

def test_text_files_reads_a_folder_and_counts_replaced_bytes(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("Hello there.\n")
    (tmp_path / "sub" / "a.md").write_bytes(b"bad \xff\xfe bytes, one real \xef\xbf\xbd")
    (tmp_path / ".hidden").write_text("skip me")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("skip me too")
    corpus = text_files(tmp_path)
    assert [d.name for d in corpus.documents] == ["b.txt", "sub/a.md"]
    assert corpus.replaced == 2 and corpus.documents[1].text.count("\ufffd") == 3
    assert corpus.name == "text" and corpus.source == str(tmp_path)
    single = text_files(tmp_path / "b.txt")
    assert single.documents == (TextDocument("b.txt", "Hello there.\n"),) and single.replaced == 0


def test_text_files_refuses_binary_empty_and_missing(tmp_path: Path) -> None:
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "data.bin").write_bytes(b"PK\x03\x04\x00\x00")
    with pytest.raises(DataError, match=re.escape(str(binary / "data.bin"))):
        text_files(binary)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=re.escape(str(empty))):
        text_files(empty)
    (empty / "blank.txt").write_text(" \n\t\n")
    with pytest.raises(DataError, match=re.escape(str(empty))):
        text_files(empty)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "missing"))):
        text_files(tmp_path / "missing")
    with pytest.raises(DataError, match="needs a path"):
        load_text_source("text")
    with pytest.raises(DataError, match="known text sources"):
        load_text_source("shakespeare")


# --- split and vocabulary -------------------------------------------------------------------------------

def _corpus(*texts: str) -> TextCorpus:
    docs = tuple(TextDocument(f"d{i}", t) for i, t in enumerate(texts))
    return TextCorpus("toy", docs, "memory", content_fingerprint(docs))


def test_split_by_position_is_exact_per_document() -> None:
    one, two = "".join(chr(65 + i % 26) for i in range(100)), "x" * 30 + "y" * 10 + "z" * 10
    splits = split_by_position(_corpus(one, two), val_fraction=0.1, test_fraction=0.2)
    assert splits["train"] == one[:70] + "\n\n" + "x" * 30 + "y" * 5
    assert splits["val"] == one[70:80] + "\n\n" + "y" * 5
    assert splits["test"] == one[80:] + "\n\n" + "z" * 10
    assert split_by_position(_corpus(one), 0, 0) == {"train": one, "val": "", "test": ""}
    with pytest.raises(DataError, match="toy"):
        split_by_position(_corpus(one), 0.5, 0.5)


def test_vocabulary_round_trip_and_unknown_characters() -> None:
    vocab = Vocabulary.build("hello world")
    assert vocab.chars == ("\ufffd", " ", "d", "e", "h", "l", "o", "r", "w") and len(vocab) == 9
    ids = vocab.encode("hello world")
    assert ids.dtype == np.uint8 and vocab.decode(ids) == "hello world"
    np.testing.assert_array_equal(vocab.encode("hz\ufffd"), [4, 0, 0])
    assert vocab.decode([4, 0]) == "h\ufffd" and vocab.encode("").shape == (0,)
    assert Vocabulary.from_json(json.loads(json.dumps(vocab.to_json()))) == vocab
    with pytest.raises(DataError, match="0..8"):
        vocab.decode([9])
    big = Vocabulary.build("".join(chr(0x400 + i) for i in range(300)) + "a")
    text = "a" + chr(0x400 + 299) + "\U0001f600"
    assert big.encode(text).dtype == np.uint16 and big.decode(big.encode(text)) == text[:2] + "\ufffd"
    assert len(Vocabulary.build("")) == 1 and Vocabulary.build("").encode("ab").tolist() == [0, 0]
