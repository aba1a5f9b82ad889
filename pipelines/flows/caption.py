"""Image captioning (§10): ingest → train (Ray Train) → evaluate → register.

    visionray run caption                                  # Fashion-MNIST grids, CNN + LSTM with attention
    visionray run caption caption.attention=false          # the pooled feature only (Show and Tell)

The data are 56×56 grids of 1–4 Fashion-MNIST items with captions such as "a sneaker in the top left and a
bag in the bottom right" (components.data.sources.fashion_grid; test items only from Fashion-MNIST's test
images). Each Ray Train worker reads its own slice of the ingested arrays (components.tasks.captioning);
every epoch decodes the val split greedily and logs ``val/bleu4`` and ``val/mention_f1`` (does the caption
name exactly the items present). The test split is decoded with beam search (``caption.beam_size``); a table
of test images with generated and reference captions is logged. Registered as ``<dataset>-captioner``,
gated on test BLEU-4; served: uint8 images in, one caption each (param ``beam_size``).
"""

from __future__ import annotations

from typing import Any

from pipelines.config import Config
from pipelines.flows.kit import register, stage, test_metrics, workdir_for
from pipelines.records import Evaluation, TextPrepared, Trained
from pipelines.services import names, tracking
from pipelines.services.progress import say

STAGES = ("ingest", "train", "evaluate", "register")


def spec_for(cfg: Config, prepared: TextPrepared):
    import numpy as np

    from components.packaging import ModelSpec

    c = cfg.caption
    _, size, _, channels = np.load(prepared.path("val"))["images"].shape  # fashion_grid: 56×56 grey
    return ModelSpec(name="captioner", in_channels=int(channels), num_classes=len(prepared.vocab), image_size=int(size),
                     classes=prepared.vocab, normalization="none", width=c.width, dropout=cfg.model.dropout,
                     batchnorm=False, task="captioning", embed=c.embed, decoder=c.hidden, attention=c.attention)


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines.stages import ingest, train

    out: dict[str, Any] = {}
    workdir = workdir_for(cfg, parent.run_id)
    with stage("ingest", parent, cfg):
        prepared = out["prepared"] = ingest.run_captions(cfg)
    parent.set_tags({names.DATASET_VERSION: prepared.version})
    if "train" in cfg.stages:
        with stage("train", parent, cfg) as run_id:
            trained = out["trained"] = train.run(cfg, prepared, parent.uri, run_id,
                                                 f"{cfg.pipeline}-{parent.run_id}", workdir,
                                                 spec=spec_for(cfg, prepared))
    if "evaluate" in cfg.stages:
        with stage("evaluate", parent, cfg):
            evaluation = out["evaluation"] = evaluate(cfg, prepared, trained)
        tracking.log_metrics(test_metrics(evaluation))
        register(cfg, parent, evaluation, len(prepared.vocab), out, prepared.version)
    return out


def evaluate(cfg: Config, prepared: TextPrepared, trained: Trained) -> Evaluation:
    """Beam-search captions of the whole test split from the served form itself: BLEU-4, mention F1, a table."""
    import numpy as np
    import torch

    from components.packaging import load_package
    from components.tasks import build_task

    model, spec = load_package(trained.best_checkpoint)
    task = build_task(spec.task, num_classes=spec.num_classes, classes=spec.classes)
    data = np.load(prepared.path("test"))
    images, ids, items = data["images"], data["ids"], data["items"]
    captions: list[str] = []
    for start in range(0, len(images), 256):
        captions += task.predict(model, images[start:start + 256], {"beam_size": cfg.caption.beam_size})["caption"]
    stats = task.meter()
    hyps = np.full((len(captions), cfg.caption.max_len + 1), 2, dtype=np.int64)  # <end>-padded word ids
    index = {w: i for i, w in enumerate(task.vocab)}
    for row, caption in enumerate(captions):
        words = [index.get(w, 3) for w in caption.split()][:cfg.caption.max_len]
        hyps[row, :len(words)] = words
    refs = torch.from_numpy(np.asarray(ids))  # N×L, or N×K×L: every reference of each image
    stats.add((None, torch.from_numpy(hyps)), (refs if refs.ndim == 2 else refs[:, 0],
                                              torch.from_numpy(np.asarray(items)), refs), float("nan"))
    metrics = {k: v for k, v in stats.compute().items() if k != "loss" and np.isfinite(v)}
    first = np.asarray(ids)[:32] if np.asarray(ids).ndim == 2 else np.asarray(ids)[:32, 0]
    references = [" ".join(stats.words(r)) for r in first.tolist()]
    tracking.log_table([{"generated": g, "reference": r} for g, r in zip(captions[:32], references)],
                       "eval/test_captions.json")
    mention = f", mention F1 {metrics['mention_f1']:.4f}" if "mention_f1" in metrics else ""
    say(f"evaluate: test BLEU-4 {metrics['bleu4']:.4f}{mention} on "
        f"{len(captions):,} images (beam {cfg.caption.beam_size})")
    tracking.log_metrics({names.metric(names.TEST, k): v for k, v in metrics.items()})
    example = np.asarray(images[:2])
    return Evaluation(trained.best_checkpoint, metrics, example[..., 0] if example.shape[-1] == 1 else example,
                      task=task.name, primary=task.primary, higher_is_better=task.higher_is_better)
