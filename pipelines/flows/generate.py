"""Generative models (§13): ingest → preprocess → train (Ray Train) → evaluate → register.

    visionray run generate                                 # VAE on Fashion-MNIST
    visionray run generate model=pixelcnn                  # PixelCNN: exact bits/dim
    visionray run generate model=vae generate.beta=4 generate.binarize=true
    visionray run generate data=digits train.epochs=2      # sklearn's 8×8 digits, seconds
    visionray run generate model=dcgan                     # DCGAN, judged by Fashion-FID (also cdcgan, ddpm)

Images come from the same ingested shards as the classifiers' (data=fashion_mnist|digits|image_folder|
cifar10), streamed to the Ray Train workers by Ray Data. Each epoch logs the model's losses
(``train/loss``, ``val/bits_per_dim``, a VAE's reconstruction and KL terms) and an 8×8 grid of samples
from the same 64 seeds as an MLflow image at the epoch's step (``samples/grid``). Evaluation scores the
best epoch on the test split in bits per dimension with a discrete likelihood (a VAE: its negative ELBO,
and the importance-weighted bound with ``generate.iw_samples`` samples) beside two baselines measured on
the same test images: an independent 256-way histogram per pixel and ``xz -9``
(pipelines.flows.generate_eval). Registered as ``<dataset>-<model>`` (``fashion-mnist-vae``), champion
gate on test bits/dim (lower wins); served: a 1-D int64 array of seeds in, one uint8 image per seed out.
DCGAN, the conditional DCGAN and the DDPM have no likelihood: they are judged by FID in the features of a
registered classifier (``generate.fid_model``), per epoch on val and at evaluation on test, with the
run's own calibration (pipelines.flows.generate_fid); gate on test FID (lower wins).
"""

from __future__ import annotations

from typing import Any

from pipelines.config import Config
from pipelines.flows.kit import prepare, register, stage, test_metrics, workdir_for
from pipelines.records import Prepared
from pipelines.services import names, tracking
from pipelines.services.progress import say


def spec_for(cfg: Config, prepared: Prepared):
    """The generative model of ``model.*`` and ``generate.*``, sized for the ingested images."""
    from components.models.generative import generator_class
    from components.packaging import ModelSpec

    m, g = cfg.model, cfg.generate
    h, _, c = prepared.shape
    takes = generator_class(m.name).OPTIONS
    classes = tuple(prepared.manifest().classes)
    gan = generator_class(m.name).train_step is not None  # a GAN: its z is generate.gan_latent
    options = {"width": m.width or None, "depth": m.depth, "latent": g.gan_latent if gan else g.latent,
               "beta": g.beta, "sample_steps": g.ddim_steps}
    return ModelSpec(name=m.name, in_channels=int(c), num_classes=len(classes), image_size=int(h), classes=classes,
                     normalization="none", dropout=0.0, batchnorm=False, task="generation",
                     levels=2 if g.binarize else 256, **{k: v for k, v in options.items() if k in takes})


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from components.models.generative import generator_class
    from components.models.generative.adversarial import GAN_OPTIONS
    from pipelines.flows import generate_eval, generate_fid
    from pipelines.stages import train

    out: dict[str, Any] = {}
    workdir = workdir_for(cfg, parent.run_id)
    judged_by_fid = generator_class(cfg.model.name).primary == names.FID
    # the judge first: a run that cannot be scored stops before anything runs
    fid_model = generate_fid.feature_model(cfg, workdir) if judged_by_fid else None
    prepared = prepare(cfg, parent, workdir, out)
    manifest = out["manifest"]
    if fid_model is not None:
        generate_fid.check_feature_model(cfg, prepared, fid_model)
    g = cfg.generate
    if generator_class(cfg.model.name).train_step is not None:  # the train stage's line says train.lr
        say(f"generate: {cfg.model.name} updates D {g.d_steps}x then G per batch, {cfg.train.optimizer} per net at "
            f"generate.gan_lr {g.gan_lr:g} (D x{g.d_lr_ratio:g}), beta1 {g.beta1:g}, {g.gan_loss} loss; "
            f"train.lr is not used")
    if "train" in cfg.stages:
        with stage("train", parent, cfg) as run_id:
            trained = out["trained"] = train.run(
                cfg, prepared, parent.uri, run_id, f"{cfg.pipeline}-{parent.run_id}", workdir,
                spec=spec_for(cfg, prepared),
                hooks=generate_fid.train_hooks(cfg, prepared, workdir, fid_model) if fid_model else None,
                task_options={"sample_every": g.sample_every, "grid_key": names.SAMPLE_GRID,
                              "options": {k: getattr(g, k) for k in GAN_OPTIONS}})
    if "evaluate" in cfg.stages:
        with stage("evaluate", parent, cfg):
            evaluation = out["evaluation"] = generate_eval.run(cfg, prepared, trained, fid_model)
        tracking.log_metrics(test_metrics(evaluation))
        register(cfg, parent, evaluation, prepared.num_classes, out, manifest.version)
    return out
