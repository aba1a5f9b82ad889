"""Canonical Huffman coding of small-alphabet integer streams (Deep Compression's last step, §15.2).

Only the code lengths are stored (one byte per symbol of the alphabet); the codes are rebuilt
canonically. Lengths are capped at :data:`MAX_BITS` by flattening the counts (as zlib does), so decoding
is a table lookup per symbol::

    data, lengths = encode(symbols, alphabet=33)
    assert (decode(data, lengths, len(symbols)) == symbols).all()
"""

from __future__ import annotations

import heapq

import numpy as np

MAX_BITS = 16


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length of every symbol (0 for unused symbols), at most :data:`MAX_BITS`."""
    counts = np.asarray(counts, dtype=np.int64).copy()
    while True:
        lengths = _lengths(counts)
        if lengths.max(initial=0) <= MAX_BITS:
            return lengths
        counts = np.where(counts > 0, counts // 2 + 1, 0)  # flatter counts, shorter longest code


def _lengths(counts: np.ndarray) -> np.ndarray:
    used = [int(s) for s in np.nonzero(counts)[0]]
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    heap = [(int(counts[s]), i, [s]) for i, s in enumerate(used)]
    heapq.heapify(heap)
    tie = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        lengths[s1 + s2] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code of each symbol (shorter codes first, then by symbol), as integers."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, 0
    for s in sorted(np.nonzero(lengths)[0], key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        codes[s], prev = code, int(lengths[s])
        code += 1
    return codes


def encode(symbols: np.ndarray, alphabet: int) -> tuple[bytes, np.ndarray]:
    """(bit-packed stream, code lengths as uint8) of ``symbols`` in ``[0, alphabet)``."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size == 0:
        return b"", np.zeros(alphabet, dtype=np.uint8)
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet))
    codes = canonical_codes(lengths)
    sym_len, sym_code = lengths[symbols], codes[symbols]
    shifts = np.arange(MAX_BITS - 1, -1, -1)
    # Each code left-aligned in MAX_BITS columns; keep the first `length` bits of each row.
    bits = (sym_code[:, None] << (MAX_BITS - sym_len)[:, None]) >> shifts[None, :] & 1
    bits = bits[np.arange(MAX_BITS)[None, :] < sym_len[:, None]]
    return np.packbits(bits.astype(np.uint8)).tobytes(), lengths.astype(np.uint8)


def decode(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` symbols encoded in ``data`` with code ``lengths``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    codes = canonical_codes(lengths)
    top = int(lengths.max())
    # Lookup tables over every `top`-bit window: which symbol starts it and how long its code is.
    table_sym = np.zeros(1 << top, dtype=np.int64)
    table_len = np.zeros(1 << top, dtype=np.int64)
    for s in np.nonzero(lengths)[0]:
        lo = int(codes[s]) << (top - int(lengths[s]))
        hi = lo + (1 << (top - int(lengths[s])))
        table_sym[lo:hi], table_len[lo:hi] = s, lengths[s]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(np.int64)
    bits = np.concatenate([bits, np.zeros(top, dtype=np.int64)])
    windows = np.zeros(len(bits) - top, dtype=np.int64)
    for j in range(top):  # windows[i] = the `top` bits starting at bit i, as an integer
        windows = (windows << 1) | bits[j:j + len(windows)]
    win, tsym, tlen = windows.tolist(), table_sym.tolist(), table_len.tolist()
    out, pos = [0] * count, 0
    for i in range(count):  # sequential by nature: each code's start depends on the one before
        w = win[pos]
        out[i] = tsym[w]
        pos += tlen[w]
    return np.asarray(out, dtype=np.int64)
