"""Where a captioner's mention F1 goes: cells it names wrongly vs items it mislabels, on the test grids.

    .venv/bin/python tests/pipelines/caption_errors.py MODEL_DIR DATA_DIR [beam_size]

MODEL_DIR is a captioner package (a train stage's ``best_model/``, or ``checkpoints/<run>/best``), DATA_DIR the
ingested ``fashion_grid-<version>/``. Prints the (cell, item) true positives, false positives and false
negatives; how many occupied cells the captions name at all (location); and, among the cells named at the
right place, how often the item is the right one (the captioner's per-item classification accuracy, which
bounds mention F1 when every occupied cell is named), with the confusions between Fashion-MNIST classes.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

from components.data.sources.fashion_grid import CLASS_NAMES
from components.packaging import load_package
from components.tasks import build_task
from components.text_metrics import parse_mentions


def main(model_dir: str, data_dir: str, beam: int = 3) -> int:
    model, spec = load_package(Path(model_dir))
    task = build_task(spec.task, num_classes=spec.num_classes, classes=spec.classes)
    data = np.load(Path(data_dir) / "test.npz")
    images, items = data["images"], data["items"]
    captions: list[str] = []
    for start in range(0, len(images), 256):
        captions += task.predict(model, images[start:start + 256], {"beam_size": beam})["caption"]
    tp = fp = fn = cells = located = right = 0
    confusions: Counter = Counter()
    for caption, row in zip(captions, items.tolist()):
        said = dict(parse_mentions(caption))  # cell -> class the caption names there
        true = {cell: c for cell, c in enumerate(row) if c >= 0}
        tp += sum(1 for cell, c in said.items() if true.get(cell) == c)
        fp += sum(1 for cell, c in said.items() if true.get(cell) != c)
        fn += sum(1 for cell, c in true.items() if said.get(cell) != c)
        cells += len(true)
        for cell, c in true.items():
            if cell in said:
                located += 1
                right += said[cell] == c
                if said[cell] != c:
                    confusions[(CLASS_NAMES[c], CLASS_NAMES[said[cell]])] += 1
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    print(f"{len(captions):,} test grids, {cells:,} items; beam {beam}")
    print(f"mention F1 {f1:.4f} (tp {tp:,}, fp {fp:,}, fn {fn:,})")
    print(f"occupied cells named at all: {located / cells:.4f}; right item where named: {right / max(located, 1):.4f}")
    print("most frequent confusions (true -> said): "
          + ", ".join(f"{a} -> {b} {n}" for (a, b), n in confusions.most_common(6)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4])))
