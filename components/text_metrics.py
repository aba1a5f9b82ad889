"""Scoring generated captions (course notes §10): corpus BLEU on word tokens, and for the Fashion-MNIST grids
(``components.data.sources.fashion_grid``) whether a caption names exactly the items that are there.

    >>> from components.text_metrics import corpus_bleu, mention_f1, parse_mentions, tokenize
    >>> hyp = tokenize("a bag in the top left and a coat in the bottom right")
    >>> corpus_bleu([hyp], [[hyp]])                                   # one hypothesis, its references
    1.0
    >>> said = parse_mentions("a bag in the top left and a coat in the bottom right")
    >>> sorted(said)                                                  # (cell, class id) pairs
    [(0, 8), (3, 4)]
    >>> mention_f1([said], [{(0, 8), (3, 6)}])                        # the coat should have been a shirt
    0.5

BLEU is the standard corpus BLEU (Papineni et al., 2002) as NLTK's ``corpus_bleu`` and sacrebleu compute it on
given tokens: clipped n-gram counts summed over the corpus, uniform weights, the brevity penalty against the
closest reference length (ties to the shorter), no smoothing, so a corpus without a single matching 4-gram
scores 0.  BLEU rewards fluent word overlap; mention F1 catches a fluent caption that names the wrong things.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["corpus_bleu", "mention_f1", "parse_mentions", "tokenize"]

# A word is letters/digits, optionally joined by hyphens or apostrophes: "t-shirt" and "don't" stay one token;
# punctuation is dropped, so "left," and "left" are the same word to BLEU and to the vocabulary.
_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")


def tokenize(caption: str) -> list[str]:
    """Lower-case words of ``caption``, punctuation dropped ("A T-shirt, left." -> ["a", "t-shirt", "left"])."""
    return _WORD.findall(caption.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]],
                max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` of token lists ``hypotheses`` against ``references`` (one list of reference token
    lists per hypothesis), in [0, 1]."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    matched, total = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        if not refs:
            raise ValueError("every hypothesis needs at least one reference")
        hyp_len += len(hyp)
        ref_len += min((len(r) for r in refs), key=lambda r: (abs(r - len(hyp)), r))
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            # Clip each n-gram at the most times any single reference holds it.
            most: Counter = Counter()
            for ref in refs:
                most |= _ngrams(ref, n)
            matched[n - 1] += sum(min(c, most[g]) for g, c in counts.items())
            total[n - 1] += max(len(hyp) - n + 1, 0)
    if min(matched) == 0:  # log 0: without smoothing one empty order zeroes the geometric mean
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matched, total)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def mention_f1(predicted_items: Sequence[set[tuple[int, int]]], true_items: Sequence[set[tuple[int, int]]]) -> float:
    """Micro-F1 over (cell, class) pairs summed over all captions: 1.0 when every caption names exactly the
    items present (also when there is nothing to name and nothing is named), 0.0 when none is right."""
    if len(predicted_items) != len(true_items):
        raise ValueError(f"{len(predicted_items)} predictions but {len(true_items)} ground truths")
    tp = sum(len(p & t) for p, t in zip(predicted_items, true_items))
    wrong = sum(len(p ^ t) for p, t in zip(predicted_items, true_items))  # false positives + false negatives
    return 1.0 if tp + wrong == 0 else 2 * tp / (2 * tp + wrong)


def _either(phrases: Iterable[str]) -> str:
    """A regex alternation of ``phrases``, longest first so a longer name wins over its prefix."""
    return "|".join(map(re.escape, sorted(phrases, key=len, reverse=True)))


def parse_mentions(caption: str, class_names: Sequence[str] | None = None,
                   cells: Sequence[str] | None = None) -> set[tuple[int, int]]:
    """The (cell index, class id) pairs a caption states, each as "a|an <class> in the <cell>"; anything else
    (a repeated word, a missing cell, an unknown class) contributes nothing.  Defaults: fashion_grid's
    ``CLASS_NAMES`` and ``CELLS``."""
    if class_names is None or cells is None:
        from components.data.sources.fashion_grid import CELLS, CLASS_NAMES
        class_names, cells = class_names or CLASS_NAMES, cells or CELLS
    # Match on the normalised token stream, so punctuation and spacing in the caption cannot matter.
    classes = {" ".join(tokenize(name)): i for i, name in enumerate(class_names)}
    where = {" ".join(tokenize(cell)): i for i, cell in enumerate(cells)}
    # Space-delimited so "shirt" never matches inside "t-shirt"; the lookahead leaves the space for the next one.
    pattern = re.compile(rf" (?:a|an) ({_either(classes)}) in the ({_either(where)})(?= )")
    text = " " + " ".join(tokenize(caption)) + " "
    return {(where[m.group(2)], classes[m.group(1)]) for m in pattern.finditer(text)}
