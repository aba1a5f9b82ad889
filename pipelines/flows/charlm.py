"""Character language models (§10): ingest → n-gram baseline → train (Ray Train, truncated BPTT) →
evaluate → register.

    visionray run charlm                                   # Jane Austen's novels, a 2-layer LSTM
    visionray run charlm charlm.arch=gru                   # rnn | gru | lstm | transformer
    visionray run charlm data=text data.path=~/books       # any UTF-8 file or folder

The corpus becomes three token streams (the last 10 % of each document is test, the 10 % before it val);
each Ray Train worker reads its own contiguous slice of the train stream (components.tasks.language_model).
Every epoch logs ``train/bpc``/``val/bpc`` and samples at two temperatures (``samples/epoch_NNN.txt`` on
the train run); the order-5 add-k n-gram baseline is measured on the same splits (``baseline/bpc``). The
model registers as ``<dataset>-charlm``, gated on test bits per character (lower wins), and serves text:
a column ``prompt`` in, continuations (or ``mode=bpc``: bits per character) out.
"""

from __future__ import annotations

from typing import Any

from pipelines.config import Config
from pipelines.flows.kit import register, stage, test_metrics, workdir_for
from pipelines.records import Evaluation, TextPrepared, Trained
from pipelines.services import names, tracking
from pipelines.services.progress import say

STAGES = ("ingest", "baseline", "train", "evaluate", "register")
#: The prompts of the registered model's input example and of the final samples.
PROMPTS = ("It is a truth universally acknowledged", "\n")


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines.stages import ingest, train

    out: dict[str, Any] = {}
    workdir = workdir_for(cfg, parent.run_id)
    with stage("ingest", parent, cfg):
        prepared = out["prepared"] = ingest.run_text(cfg)
    parent.set_tags({names.DATASET_VERSION: prepared.version})
    if "baseline" in cfg.stages and cfg.charlm.ngram_order:
        with stage("baseline", parent, cfg):
            out["baseline"] = baseline(cfg, prepared)
        tracking.log_metrics(out["baseline"])  # on the parent too: the runs table shows it beside test/bpc
    if "train" in cfg.stages:
        with stage("train", parent, cfg) as run_id:
            trained = out["trained"] = train.run(cfg, prepared, parent.uri, run_id,
                                                 f"{cfg.pipeline}-{parent.run_id}", workdir)
    if "evaluate" in cfg.stages:
        with stage("evaluate", parent, cfg):
            evaluation = out["evaluation"] = evaluate(cfg, prepared, trained)
        tracking.log_metrics(test_metrics(evaluation))
        register(cfg, parent, evaluation, len(prepared.vocab), out, prepared.version)
    return out


def baseline(cfg: Config, prepared: TextPrepared) -> dict[str, float]:
    """The order-n add-k n-gram model: k chosen on val, bits per character on test."""
    import numpy as np

    from components.text_baselines import NGramModel

    order, vocab = cfg.charlm.ngram_order, len(prepared.vocab)
    train_ids, val_ids, test_ids = (np.asarray(prepared.ids(s)) for s in ("train", "val", "test"))
    k, by_k = NGramModel.tune_k(train_ids, val_ids, order=order, vocab_size=vocab)
    test_bpc = NGramModel(order=order, k=k, vocab_size=vocab).fit(train_ids).bits_per_char(test_ids)
    for step, (kk, bpc) in enumerate(sorted(by_k.items())):
        tracking.log_metrics({"baseline/val_bpc_by_k": bpc, "baseline/k_tried": kk}, step=step)
    say(f"baseline: order-{order} n-gram, add-k {k:g} (chosen on val: {by_k[k]:.3f} bpc), "
        f"test {test_bpc:.3f} bits per character")
    return {names.NGRAM_BPC: test_bpc, names.NGRAM_VAL_BPC: by_k[k], names.NGRAM_K: k}


def evaluate(cfg: Config, prepared: TextPrepared, trained: Trained) -> Evaluation:
    """Bits per character of the best epoch's model on the whole test stream; samples; the served form
    checked on the very package that registers."""
    import numpy as np
    import pandas as pd
    import torch

    from components.models.charlm import bits_per_char
    from components.packaging import load_package
    from pipelines.stages.train import build_task

    model, spec = load_package(trained.best_checkpoint)
    task = build_task(cfg.train, spec)
    test = torch.from_numpy(np.asarray(prepared.ids("test"), dtype=np.int64))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bpc = bits_per_char(model, test, chunk=cfg.train.bptt, batch_streams=16)
    metrics = {"bpc": bpc, "loss": bpc * np.log(2), "characters": float(len(test))}
    samples = []
    for t in cfg.charlm.temperatures:
        out = task.predict(model, list(PROMPTS), {"max_new_chars": cfg.charlm.sample_chars or 200,
                                                   "temperature": t, "seed": cfg.seed})
        samples += [f"--- temperature {t:g}, prompt {p!r}\n{p}{text}\n" for p, text in zip(PROMPTS, out["text"])]
    tracking.log_text("\n".join(samples), f"{names.CHARLM_SAMPLES_DIR}/test_samples.txt")
    scored = task.predict(model, [PROMPTS[0]], {"mode": "bpc"})["bpc"][0]
    if not np.isfinite(scored):
        raise RuntimeError(f"the served form scored {PROMPTS[0]!r} as {scored}")
    say(f"evaluate: test {bpc:.4f} bits per character on {len(test):,} characters")
    tracking.log_metrics({names.metric(names.TEST, k): v for k, v in metrics.items()})
    return Evaluation(trained.best_checkpoint, metrics, pd.DataFrame({"prompt": [PROMPTS[0]]}),
                      task=task.name, primary=task.primary, higher_is_better=task.higher_is_better)
