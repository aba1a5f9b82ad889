"""Your own text: one UTF-8 file, or every file under a folder, as a ``TextCorpus`` named "text".

    from components.data.sources import text_files

    corpus = text_files("~/books")            # recursive; documents sorted by relative path
    [d.name for d in corpus.documents]        # ["a.txt", "poems/b.md", ...]; hidden files skipped
    corpus.replaced                           # bytes that were not UTF-8, now U+FFFD

A file with a NUL byte in its first 8 KiB is taken for binary and refused rather than read as
mojibake; a stray undecodable byte in real text is replaced and counted instead, so one bad byte
does not cost a whole book.  A byte-order mark at the start of a file is dropped.
"""

from __future__ import annotations

from pathlib import Path

from components.data.errors import DataError
from components.data.text import TextCorpus, TextDocument, content_fingerprint

__all__ = ["text_files"]

_SNIFF = 8192
_FFFD = "\ufffd".encode()


def _files(root: Path) -> list[tuple[str, Path]]:
    if root.is_file():
        return [(root.name, root)]
    if not root.is_dir():
        raise DataError(f"Text path {root} does not exist.")
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        # Hidden files and anything inside hidden folders (.git, .ipynb_checkpoints) are not corpus text.
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            found.append((rel.as_posix(), path))
    return sorted(found)


def text_files(path: str | Path) -> TextCorpus:
    """Read a UTF-8 file, or every non-hidden file under a folder, one document per file."""
    root = Path(path).expanduser()
    documents, replaced = [], 0
    for name, file in _files(root):
        try:
            data = file.read_bytes()
        except OSError as err:
            raise DataError(f"Could not read text file {file} ({err}).") from err
        if b"\0" in data[:_SNIFF]:
            raise DataError(f"File {file} looks binary (a NUL byte in its first 8 KiB), not UTF-8 text.")
        text = data.decode("utf-8-sig", errors="replace")
        # Count only the U+FFFD that decoding introduced, not ones the file already spelled out.
        replaced += text.count("\ufffd") - data.count(_FFFD)
        documents.append(TextDocument(name, text))
    if not any(doc.text.strip() for doc in documents):
        raise DataError(f"Text path {root} holds no text (no files, or only empty or whitespace ones).")
    return TextCorpus("text", tuple(documents), str(root), content_fingerprint(documents), replaced)
