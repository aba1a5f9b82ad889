"""Text corpora for character language models: documents in memory, a position split and a vocabulary.

    from components.data.sources import austen
    from components.data.text import Vocabulary, split_by_position

    corpus = austen()                                   # TextCorpus: six novels, ~4.0 M characters
    splits = split_by_position(corpus, val_fraction=0.1, test_fraction=0.1)
    vocab = Vocabulary.build(splits["train"])           # id 0 = a character never seen in train
    ids = vocab.encode(splits["val"])                   # np.uint8 array (uint16 above 256 symbols)
    vocab.decode(ids[:80])                              # back to text; unseen characters show as U+FFFD

Splitting by position (the end of each document is held out) rather than by random lines keeps
neighbouring, near-duplicate text from leaking between train and evaluation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from components.data.errors import DataError

__all__ = ["UNKNOWN", "TextCorpus", "TextDocument", "Vocabulary", "content_fingerprint", "split_by_position"]

#: What id 0 decodes to: the character a vocabulary has never seen.
UNKNOWN = "\ufffd"


@dataclass(frozen=True)
class TextDocument:
    """One document: a name (e.g. ``"emma"`` or a path relative to the corpus root) and its text."""

    name: str
    text: str


@dataclass(frozen=True)
class TextCorpus:
    """Documents in a fixed order plus where they came from and a content fingerprint (sha256 hex)."""

    name: str
    documents: tuple[TextDocument, ...]
    source: str
    fingerprint: str
    replaced: int = 0  # undecodable bytes replaced by U+FFFD while reading

    @property
    def characters(self) -> int:
        return sum(len(doc.text) for doc in self.documents)


def content_fingerprint(documents: Iterable[TextDocument]) -> str:
    """sha256 of the documents' names and texts, so a copy of the corpus elsewhere has the same version."""
    digest = hashlib.sha256()
    for doc in documents:
        name, text = doc.name.encode(), doc.text.encode("utf-8", "surrogatepass")
        # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        digest.update(b"%d:%s%d:" % (len(name), name, len(text)) + text)
    return digest.hexdigest()


def split_by_position(corpus: TextCorpus, val_fraction: float = 0.1, test_fraction: float = 0.1) -> dict[str, str]:
    """``{"train", "val", "test"}`` text: of each document the last ``test_fraction`` of its characters
    go to test, the ``val_fraction`` before them to val and the rest to train; the documents' pieces are
    joined with ``"\\n\\n"`` in corpus order (empty pieces are left out)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"Cannot split corpus {corpus.name} with val_fraction={val_fraction} and "
                        f"test_fraction={test_fraction}; each must be in [0, 1) and their sum below 1.")
    pieces: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for doc in corpus.documents:
        n = len(doc.text)
        val_start, test_start = n - round(n * (val_fraction + test_fraction)), n - round(n * test_fraction)
        for split, piece in (("train", doc.text[:val_start]), ("val", doc.text[val_start:test_start]),
                             ("test", doc.text[test_start:])):
            if piece:
                pieces[split].append(piece)
    return {split: "\n\n".join(parts) for split, parts in pieces.items()}


class Vocabulary:
    """Characters <-> integer ids. ``chars[i]`` is the character of id ``i``; ``chars[0]`` is the
    reserved U+FFFD that every unseen character encodes to (a U+FFFD in the text encodes to 0 too)."""

    def __init__(self, chars: Sequence[str]):
        """``chars``: the known characters in id order 1, 2, ... (without the reserved id 0)."""
        chars = tuple(chars)
        if any(len(c) != 1 or c == UNKNOWN for c in chars) or len(set(chars)) != len(chars):
            raise DataError("A vocabulary needs distinct single characters other than U+FFFD.")
        self.chars: tuple[str, ...] = (UNKNOWN, *chars)
        points = np.array([ord(c) for c in chars], dtype=np.uint32)
        # Sorted code points and their ids make encode one vectorised searchsorted, not a Python loop.
        order = np.argsort(points, kind="stable")
        self._sorted_points, self._sorted_ids = points[order], (order + 1).astype(np.int64)
        self._points = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @classmethod
    def build(cls, text: str) -> Vocabulary:
        """The sorted distinct characters of ``text``, ids from 1."""
        return cls(sorted(set(text) - {UNKNOWN}))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} ids)"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if len(self) <= 256 else np.uint16 if len(self) <= 65536 else np.uint32)

    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text``'s characters; characters not in the vocabulary become 0."""
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        known = self._sorted_points
        if not len(known):
            return np.zeros(len(points), dtype=self.dtype)
        pos = np.minimum(np.searchsorted(known, points), len(known) - 1)
        return np.where(known[pos] == points, self._sorted_ids[pos], 0).astype(self.dtype)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        ids = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise DataError(f"Cannot decode ids outside 0..{len(self) - 1} with a vocabulary of {len(self)} ids.")
        return self._points[ids.ravel()].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")

    def to_json(self) -> dict:
        return {"unknown_id": 0, "chars": list(self.chars[1:])}

    @classmethod
    def from_json(cls, data: dict) -> Vocabulary:
        if not isinstance(data, dict) or not isinstance(data.get("chars"), list):
            raise DataError("A vocabulary's JSON must be an object with a \"chars\" list.")
        return cls(data["chars"])
