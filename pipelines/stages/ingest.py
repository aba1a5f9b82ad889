"""Stage ``ingest``: a data source → versioned Parquet shards + manifest (cached when unchanged).

    visionray run quickstart stages=[ingest]          # just ingest Fashion-MNIST
    visionray run train data=image_folder data.path=~/photos stages=[ingest]

The dataset version is a content hash of the source and the split parameters; ingesting unchanged
data again finds the finished version on disk and writes nothing. Bad images are quarantined:
listed in the manifest with the reason and counted as ``data/quarantined``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from components.data.shards import Manifest, write_dataset
from components.data.sources import load_source
from components.data.subsets import subset_classes
from pipelines.config import Config
from pipelines.services import names, tracking
from pipelines.services.progress import say


def run(cfg: Config) -> Manifest:
    d = cfg.data
    started = time.perf_counter()
    raw = load_source(d.name, path=d.path, image_size=d.image_size, channels=d.channels,
                      allow_download=d.allow_download, num_images=d.num_images, seed=d.split_seed,
                      val_fraction=d.val_fraction, test_fraction=d.test_fraction)
    if d.classes:  # a class subset is its own dataset version (components.data.subsets)
        raw = subset_classes(raw, d.classes)
    manifest = write_dataset(raw, Path(d.cache_dir), seed=d.split_seed, val_fraction=d.val_fraction,
                             test_fraction=d.test_fraction)
    rows = {split: info["rows"] for split, info in manifest.splits.items()}
    say(f"ingest: {manifest.name} version {manifest.version} "
        f"({'cached' if manifest.cached else 'written'}; "
        + ", ".join(f"{k} {v:,}" for k, v in rows.items())
        + (f"; {len(manifest.quarantine)} quarantined" if manifest.quarantine else "") + ")")
    tracking.set_tags({names.DATASET_VERSION: manifest.version})
    tracking.log_metrics({names.QUARANTINED: len(manifest.quarantine),
                          names.INGEST_SECONDS: time.perf_counter() - started,
                          **{names.data_rows(k): v for k, v in rows.items()}})
    tracking.set_tags({names.DATA_CACHED_TAG: str(manifest.cached).lower()})
    tracking.log_json(manifest.to_dict(), names.MANIFEST_ARTIFACT)
    log_dataset_inputs(manifest, tuple(rows))
    return manifest


def log_dataset_inputs(manifest: Manifest, splits: tuple[str, ...]) -> None:
    """The splits as MLflow dataset inputs of the active run (name, digest = dataset version)."""
    for split in splits:
        tracking.log_dataset(f"{manifest.name}-{split}", manifest.version, Path(manifest.root) / split,
                             context=split, schema=manifest.schema)


@contextlib.contextmanager
def written_aside(root: Path) -> Iterator[Path]:
    """A fresh folder beside ``root`` to write a dataset version into, renamed to ``root`` when the block
    finishes and removed if it fails: a cache never holds half a version."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        yield tmp
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_text(cfg: Config):
    """A text source (``data=austen``, ``data=text data.path=...``) → token streams + vocabulary, versioned
    by content and split like the image shards (an unchanged corpus is found on disk, not rewritten)."""
    import hashlib
    import json

    import numpy as np

    from components.data.sources import load_text_source
    from components.data.text import Vocabulary, split_by_position
    from pipelines.records import TextPrepared

    d = cfg.data
    started = time.perf_counter()
    corpus = load_text_source(d.name, path=d.path)
    version = hashlib.sha256(f"{corpus.fingerprint}:{d.val_fraction}:{d.test_fraction}".encode()).hexdigest()[:16]
    root = Path(d.cache_dir) / f"{corpus.name}-{version}"
    cached = (root / "vocab.json").is_file()
    if not cached:
        splits = split_by_position(corpus, val_fraction=d.val_fraction, test_fraction=d.test_fraction)
        vocab = Vocabulary.build("".join(splits.values()))
        with written_aside(root) as tmp:
            for split, text in splits.items():
                np.save(tmp / f"{split}.npy", vocab.encode(text))
            (tmp / "vocab.json").write_text(json.dumps({**vocab.to_json(), "source": corpus.source,
                                                        "replaced": corpus.replaced}))
    meta = json.loads((root / "vocab.json").read_text())
    vocab = Vocabulary.from_json(meta)
    tokens = {s: int(np.load(root / f"{s}.npy", mmap_mode="r").shape[0]) for s in ("train", "val", "test")}
    prepared = TextPrepared(corpus.name, version, str(root.resolve()), tuple(vocab.chars), tokens,
                            int(meta.get("replaced", 0)), cached)
    say(f"ingest: {corpus.name} version {version} ({'cached' if cached else 'written'}; "
        + ", ".join(f"{k} {v:,} characters" for k, v in tokens.items())
        + f"; {len(vocab)} distinct" + (f"; {prepared.replaced:,} undecodable bytes replaced" if prepared.replaced else "")
        + ")")
    tracking.set_tags({names.DATASET_VERSION: version, names.DATA_CACHED_TAG: str(cached).lower()})
    tracking.log_metrics({names.INGEST_SECONDS: time.perf_counter() - started, names.CHARLM_VOCAB: len(vocab),
                          names.CHARLM_REPLACED: prepared.replaced,
                          **{names.data_rows(k): v for k, v in tokens.items()}})
    tracking.log_json({"source": corpus.source, "version": version, "tokens": tokens,
                       "documents": [doc.name for doc in corpus.documents], "vocabulary": list(vocab.chars)},
                      names.MANIFEST_ARTIFACT)
    return prepared


def run_captions(cfg: Config):
    """Captioned images (``data=fashion_grid``) → ``{train,val,test}.npz`` (images, caption ids, items) + the
    word vocabulary of the train captions, versioned like the image shards."""
    if cfg.data.name == "coco_captions":
        return _run_coco_captions(cfg)
    import hashlib
    import json

    import numpy as np

    from components.data.sources import fashion_grid, fashion_mnist
    from components.models.captioner import WordVocab
    from pipelines.records import TextPrepared

    d, c = cfg.data, cfg.caption
    started = time.perf_counter()
    source = fashion_mnist(d.path, allow_download=d.allow_download)
    sizes = {"train": c.train_images, "val": max(10, c.train_images // 10), "test": max(10, c.train_images // 10)}
    version = hashlib.sha256(f"{source.fingerprint}:{sizes}:{d.split_seed}:{c.max_len}".encode()).hexdigest()[:16]
    root = Path(d.cache_dir) / f"fashion_grid-{version}"
    cached = (root / "vocab.json").is_file()
    if not cached:
        grids = {split: fashion_grid(split, n, seed=d.split_seed, source=source) for split, n in sizes.items()}
        vocab = WordVocab.build(grids["train"].captions)
        with written_aside(root) as tmp:
            for split, g in grids.items():
                np.savez(tmp / f"{split}.npz", images=g.images, items=g.items,
                         ids=vocab.encode_batch(list(g.captions), c.max_len).numpy())
            (tmp / "vocab.json").write_text(json.dumps({"words": list(vocab.itos), "source": source.source}))
    words = tuple(json.loads((root / "vocab.json").read_text())["words"])
    prepared = TextPrepared("fashion_grid", version, str(root.resolve()), words, sizes, 0, cached, ".npz")
    say(f"ingest: fashion_grid version {version} ({'cached' if cached else 'written'}; "
        + ", ".join(f"{k} {v:,}" for k, v in sizes.items()) + f" captioned images; {len(words)} words)")
    tracking.set_tags({names.DATASET_VERSION: version, names.DATA_CACHED_TAG: str(cached).lower()})
    tracking.log_metrics({names.INGEST_SECONDS: time.perf_counter() - started,
                          **{names.data_rows(k): v for k, v in sizes.items()}})
    tracking.log_json({"version": version, "images": sizes, "vocabulary": list(words)}, names.MANIFEST_ARTIFACT)
    return prepared


def _run_coco_captions(cfg: Config):
    """A COCO-format caption file (``data=coco_captions data.path=captions_*.json``) → the same arrays as
    fashion_grid's, with every caption of an image kept (ids N×K×L, K its most captions) and no items (N×0);
    images split at random (``data.split_seed``) by ``data.val_fraction`` and ``data.test_fraction``. Files
    that cannot be used are quarantined (``ingest/quarantine.json``), not fatal."""
    import hashlib
    import json

    import numpy as np

    from components.data.errors import DataError
    from components.data.sources import coco_captions
    from components.models.captioner import WordVocab
    from pipelines.records import TextPrepared

    d, c = cfg.data, cfg.caption
    started = time.perf_counter()
    annotations = Path(d.path).expanduser()
    data, quarantine = coco_captions(annotations, d.image_root or annotations.parent, d.image_size, d.channels,
                                     limit=d.max_train_rows)
    if quarantine:  # listed in the manifest artifact below, counted in data/quarantined
        say(f"ingest: {len(quarantine):,} file(s) quarantined (first: {quarantine[0].path}: {quarantine[0].reason})")
    n = len(data)
    n_test, n_val = max(1, round(n * d.test_fraction)), max(1, round(n * d.val_fraction))
    if n - n_test - n_val < 1:
        raise DataError(f"{annotations} has {n} usable captioned image(s): too few for train, val and test.")
    version = hashlib.sha256(f"{data.fingerprint}:{d.split_seed}:{d.val_fraction}:{d.test_fraction}:"
                             f"{c.max_len}".encode()).hexdigest()[:16]
    root = Path(d.cache_dir) / f"coco_captions-{version}"
    order = np.random.default_rng(d.split_seed).permutation(n)
    rows = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    sizes = {k: len(v) for k, v in rows.items()}
    cached = (root / "vocab.json").is_file()
    if not cached:
        vocab = WordVocab.build([cap for i in rows["train"] for cap in data.captions[i]])
        most = max(len(caps) for caps in data.captions)
        with written_aside(root) as tmp:
            for split, index in rows.items():
                ids = np.zeros((len(index), most, c.max_len), dtype=np.int64)  # absent references: all <pad>
                for row, i in enumerate(index):
                    caps = list(data.captions[i])
                    ids[row, :len(caps)] = vocab.encode_batch(caps, c.max_len).numpy()
                np.savez(tmp / f"{split}.npz", images=data.images[index], ids=ids,
                         items=np.zeros((len(index), 0), dtype=np.int64))
            (tmp / "vocab.json").write_text(json.dumps({"words": list(vocab.itos), "source": str(annotations)}))
    words = tuple(json.loads((root / "vocab.json").read_text())["words"])
    prepared = TextPrepared("coco_captions", version, str(root.resolve()), words, sizes, 0, cached, ".npz")
    say(f"ingest: coco_captions version {version} ({'cached' if cached else 'written'}; "
        + ", ".join(f"{k} {v:,}" for k, v in sizes.items()) + f" captioned images; {len(words)} words)")
    tracking.set_tags({names.DATASET_VERSION: version, names.DATA_CACHED_TAG: str(cached).lower()})
    tracking.log_metrics({names.INGEST_SECONDS: time.perf_counter() - started, names.QUARANTINED: len(quarantine),
                          **{names.data_rows(k): v for k, v in sizes.items()}})
    tracking.log_json({"version": version, "images": sizes, "vocabulary": list(words), "source": str(annotations),
                       "quarantine": [{"path": q.path, "reason": q.reason} for q in quarantine]},
                      names.MANIFEST_ARTIFACT)
    return prepared
