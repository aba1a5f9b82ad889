"""DCGAN, the conditional DCGAN and the DDPM as the generation task's models: the engine's loop, the package
round trip, the served form, the val-FID hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components import engine
from components.models.generative import build_generator
from components.package_base import ModelSpec, load_state_dict_package, save_package
from components.tasks import build_task

CLASSES = tuple(str(i) for i in range(10))


def _spec(name: str) -> ModelSpec:
    return ModelSpec(name=name, in_channels=1, num_classes=10, image_size=8, classes=CLASSES, normalization="none",
                     width=8, task="generation", levels=256, latent=8 if name != "ddpm" else None,
                     sample_steps=4 if name == "ddpm" else None)


def _batches(n: int = 3):
    g = torch.Generator().manual_seed(0)
    for _ in range(n):
        x, y = torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        yield (x, y), y


@pytest.mark.parametrize("name", ["dcgan", "cdcgan", "ddpm"])
def test_one_epoch_of_the_engine_then_the_package_serves_the_same_images(name, tmp_path, one_torch_thread):
    from components.optim import build_optimizer

    torch.manual_seed(0)
    spec = _spec(name)
    model = spec.build()
    task = build_task("generation", num_classes=10, classes=CLASSES, model=name,
                      options={"d_steps": 2, "label_smoothing": 0.1})
    owner = getattr(model, "build_optimizer", None)
    opt = owner("adam", lr=1e-3, momentum=0.9, weight_decay=0.0, options={"gan_lr": 1e-3}) if owner else \
        build_optimizer("adam", model.parameters(), lr=1e-3, momentum=0.9, weight_decay=0.0)
    meter = engine.train_one_epoch(model, task, opt, _batches())
    stats = meter.compute()
    assert set(task.stats) <= set(stats) and all(np.isfinite(v) for v in stats.values())
    assert task.primary == "fid" and not task.higher_is_better
    assert (task.train_step is not None) == (name != "ddpm")  # a GAN owns its step, the DDPM does not
    val, _, _ = engine.evaluate(model, task, _batches(1))
    assert np.isfinite(val.compute()["loss"])

    save_package(tmp_path, model, spec)
    loaded, _ = load_state_dict_package(tmp_path)
    params = {"label": 3} if name == "cdcgan" else None
    a = task.predict(loaded, np.array([4, 9, 2]), params)["images"]
    b = task.predict(model, np.array([2, 4]), params)["images"]
    assert a.shape == (3, 8, 8) and a.dtype == np.uint8
    assert np.array_equal(a[0], b[1]) and np.array_equal(a[2], b[0])


def test_gan_options_reach_its_step_and_optimisers():
    from components.gan import PairOptimizer
    from components.models.generative.adversarial import recipe_of

    gan = build_generator("dcgan", in_channels=1, image_size=8, width=8, latent=8)
    opt = gan.build_optimizer("adam", lr=0.1, momentum=0.9, weight_decay=0.0,
                              options={"gan_lr": 2e-4, "beta1": 0.5, "d_lr_ratio": 2.0})
    assert isinstance(opt, PairOptimizer)
    assert opt.optimizers["generator"].param_groups[0]["lr"] == 2e-4
    assert opt.optimizers["discriminator"].param_groups[0]["lr"] == 4e-4
    assert opt.optimizers["generator"].param_groups[0]["betas"] == (0.5, 0.999)
    assert recipe_of({"gan_loss": "minimax", "d_steps": 3}).d_steps == 3
    assert build_task("generation", num_classes=10, model="dcgan").loss_floor() == 10.0


def test_the_fid_hook_reports_val_fid_on_rank_zero_only(tmp_path):
    from components.fid_hook import FidHook
    from components.models import ImageClassifier, Normalize, build_model

    torch.manual_seed(0)
    judge = ImageClassifier(Normalize.identity(1), build_model("convnet", in_channels=1, num_classes=10,
                                                                image_size=8, width=4))
    save_package(tmp_path / "judge", judge, ModelSpec(name="convnet", in_channels=1, num_classes=10, image_size=8,
                                                      classes=CLASSES, normalization="none", width=4))
    np.save(tmp_path / "val.npy", np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8))
    hook = FidHook(str(tmp_path / "judge"), str(tmp_path / "val.npy"), samples=30,
                   keys={"fid": "val/fid", "kid": "val/kid"}, subset_size=10)
    model = build_generator("cdcgan", in_channels=1, image_size=8, num_classes=10, width=8, latent=8)
    hook.setup(model)
    assert hook.end_epoch(model, 0, None) == {}
    out = hook.end_epoch(model, 0, tmp_path)
    assert set(out) == {"val/fid", "val/kid"} and out["val/fid"] > 0
    assert hook.end_epoch(model, 0, tmp_path) == out  # fixed seeds: the same model scores the same


def test_the_preflight_list_of_fid_judged_models_is_the_classes_own():
    from components.models.generative import GENERATORS
    from pipelines.flows.generate_fid import JUDGED_MODELS

    assert {name for name, cls in GENERATORS.items() if cls.primary == "fid"} == set(JUDGED_MODELS)
