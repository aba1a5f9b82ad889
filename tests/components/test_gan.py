"""DCGAN and its training step: the paper's architecture rules, alternating updates by two optimisers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from components.gan import GanRecipe, PairOptimizer, d_loss, g_loss, gan_step
from components.models.dcgan import GAN


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(a, p) for a, p in zip(before, module.parameters()))


def test_architecture_follows_the_dcgan_rules():
    gan = GAN(1, 28, latent=16, width=8)
    layers = list(gan.modules())
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in layers)  # strided convs only
    assert any(isinstance(m, nn.ConvTranspose2d) for m in gan.generator.modules())
    g_body, d_body = list(gan.generator.body), list(gan.discriminator.body)
    assert isinstance(g_body[-1], nn.Tanh) and isinstance(g_body[-2], nn.Conv2d)  # no BN on G's output
    assert isinstance(d_body[0], nn.Conv2d) and not isinstance(d_body[1], nn.BatchNorm2d)  # none on D's input
    assert all(m.negative_slope == 0.2 for m in d_body if isinstance(m, nn.LeakyReLU))
    assert not any(isinstance(m, nn.ReLU) for m in gan.discriminator.modules())
    conv_std = torch.cat([m.weight.detach().flatten() for m in layers if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]).std()
    assert 0.015 < float(conv_std) < 0.025  # N(0, 0.02)
    z = torch.randn(5, 16)
    assert gan(z).shape == (5, 1, 28, 28)
    assert gan.discriminator(gan(z)).shape == (5,)


def test_image_size_must_allow_two_halvings():
    with pytest.raises(ValueError, match="divisible by 4"):
        GAN(1, 30)


def test_conditional_nets_need_and_use_labels():
    gan = GAN(1, 8, latent=8, width=8, num_classes=3)
    z = torch.randn(4, 8)
    with pytest.raises(ValueError, match="labels"):
        gan(z)
    gan.eval()
    a, b = gan(z, torch.zeros(4, dtype=torch.long)), gan(z, torch.full((4,), 2))
    assert not torch.allclose(a, b)  # the class changes the image


def test_losses_against_closed_forms():
    logits = torch.tensor([0.0, 2.0])
    p = torch.sigmoid(logits)
    assert torch.isclose(g_loss(logits, "nonsaturating"), -torch.log(p).mean())
    assert torch.isclose(g_loss(logits, "minimax"), torch.log(1 - p).mean())
    real, fake = torch.tensor([1.0]), torch.tensor([-1.0])
    smoothed = d_loss(real, fake, label_smoothing=0.1)
    pr, pf = torch.sigmoid(real), torch.sigmoid(fake)
    expect = -(0.9 * torch.log(pr) + 0.1 * torch.log(1 - pr)) - torch.log(1 - pf)
    assert torch.isclose(smoothed, expect.squeeze())


def test_recipe_rejects_bad_options():
    with pytest.raises(ValueError, match="gan.loss"):
        GanRecipe(loss="wasserstein")
    with pytest.raises(ValueError, match="gan.d_steps"):
        GanRecipe(d_steps=0)


class _Recorder(PairOptimizer):
    """The real pair of optimisers, noting which net each step updates and whose weights moved."""

    def __init__(self, gan: GAN, inner: PairOptimizer):
        super().__init__(inner.optimizers["generator"], inner.optimizers["discriminator"])
        self.gan, self.log = gan, []

    def step(self, net: str = "", closure=None) -> None:
        g, d = _snapshot(self.gan.generator), _snapshot(self.gan.discriminator)
        super().step(net)
        self.log.append((net, _changed(g, self.gan.generator), _changed(d, self.gan.discriminator)))


def test_a_step_updates_d_then_g_alternately_each_by_its_own_optimiser():
    torch.manual_seed(0)
    gan = GAN(1, 8, latent=8, width=8, num_classes=10)
    opt = _Recorder(gan, PairOptimizer.build(gan, "adam", lr=1e-3))
    real, labels = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    stats, loss = gan_step(gan, real, labels, opt, GanRecipe(d_steps=2, label_smoothing=0.1, instance_noise=0.1))
    # two D updates that leave G untouched, then one G update that leaves D untouched
    assert opt.log == [("discriminator", False, True), ("discriminator", False, True), ("generator", True, False)]
    assert set(stats) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert torch.isclose(loss, stats["d_loss"] + stats["g_loss"])
    assert all(p.grad is None for p in gan.parameters())  # nothing left over for the next step


def test_the_auxiliary_classifier_learns_real_classes_and_pulls_g_towards_the_class_asked_for():
    torch.manual_seed(0)
    gan = GAN(1, 8, latent=8, width=8, num_classes=3)
    real, labels = torch.rand(12, 1, 8, 8), torch.randint(0, 3, (12,))
    head = gan.discriminator.classify.weight.detach().clone()
    opt = PairOptimizer.build(gan, "adam", lr=1e-3)
    gan_step(gan, real, labels, opt, GanRecipe(class_weight=0.0))
    assert torch.equal(head, gan.discriminator.classify.weight)  # weight 0: the head is not trained
    # with the weight, D's loss adds the head's cross-entropy on the real images ...
    torch.manual_seed(1)
    gan_step(gan, real, labels, opt, GanRecipe(class_weight=1.0))
    assert not torch.equal(head, gan.discriminator.classify.weight)
    # ... and G's loss the head's cross-entropy on its own images, so both exceed the plain losses of the
    # same nets by about ln 3 (an untrained head's cross-entropy over 3 classes)
    fresh = GAN(1, 8, latent=8, width=8, num_classes=3)
    torch.manual_seed(2)
    base, _ = gan_step(fresh, real, labels, PairOptimizer.build(fresh, "adam", lr=0.0), GanRecipe())
    torch.manual_seed(2)
    with_aux, _ = gan_step(fresh, real, labels, PairOptimizer.build(fresh, "adam", lr=0.0), GanRecipe(class_weight=1.0))
    for key in ("d_loss", "g_loss"):
        assert float(with_aux[key] - base[key]) == pytest.approx(1.0986, abs=0.35), key
    with pytest.raises(ValueError):
        GanRecipe(class_weight=-1.0)


def test_pair_optimizer_state_round_trips_and_a_schedule_scales_both():
    from components.optim import build_scheduler

    gan = GAN(1, 8, latent=8, width=8)
    opt = PairOptimizer.build(gan, "adam", lr=1e-3, d_lr_ratio=2.0)
    sched = build_scheduler(opt, schedule="cosine", total_steps=10, warmup_steps=0)
    gan_step(gan, torch.rand(8, 1, 8, 8), None, opt, GanRecipe())
    sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    inner = [g["lr"] for net in ("generator", "discriminator") for g in opt.optimizers[net].param_groups]
    assert lrs == inner and lrs[0] < 1e-3 and lrs[-1] == pytest.approx(2 * lrs[0])
    again = PairOptimizer.build(GAN(1, 8, latent=8, width=8), "adam", lr=1e-3)
    again.load_state_dict(opt.state_dict())
    assert again.optimizers["discriminator"].state_dict()["state"].keys() == \
        opt.optimizers["discriminator"].state_dict()["state"].keys() != set()
    with pytest.raises(TypeError, match="PairOptimizer"):
        gan_step(gan, torch.rand(8, 1, 8, 8), None, torch.optim.SGD(gan.parameters(), lr=0.1), GanRecipe())


def test_samples_depend_on_their_seed_only():
    gan = GAN(1, 8, latent=8, width=8)
    a = gan.sample_uint8([3, 5, 7])
    b = gan.sample_uint8([7, 3])
    assert a.dtype == torch.uint8 and a.shape == (3, 8, 8)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])


def test_a_diverged_step_returns_nan_before_stepping():
    gan = GAN(1, 8, latent=8, width=8)
    opt = PairOptimizer.build(gan, "adam", lr=1e-3)
    before = _snapshot(gan)
    stats, loss = gan_step(gan, torch.full((4, 1, 8, 8), float("nan")), None, opt, GanRecipe())
    assert torch.isnan(loss) and stats == {}
    assert not _changed(before, gan)  # nothing stepped on a non-finite loss
