"""Discrete likelihoods in bits per dimension, and the two honest baselines every density model is read against.

    nats = discrete_nll(logits, levels)                 # B×C×L×H×W logits, B×C×H×W integer pixels -> B nats
    bits_per_dim(nats, dims=28 * 28)                    # nats per image -> bits per pixel value
    gaussian_kl(mu, logvar)                             # KL(N(mu, exp(logvar)) || N(0, I)) per example, nats
    categorical_baseline_bits(train_u8, test_u8)        # independent per-pixel 256-way histogram (~4.6 on Fashion-MNIST)
    xz_bits(test_u8)                                    # `xz -9` of the raw test bytes (~3.9)

A pixel is one of ``levels`` integers (256 for 8-bit grey, 2 for the binarised variant), so a model's
probability of a test image is a probability mass, not a density: its negative log in bits divided by
the number of pixel values is "bits per dimension", the unit of the PixelCNN and VAE papers, and it is
directly comparable with a compressor's output size (8 bits/dim stores the raw bytes). Plain PyTorch/NumPy.
"""

from __future__ import annotations

import lzma
import math

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

LN2 = math.log(2.0)


def bits_per_dim(nats: Tensor | float, dims: int) -> Tensor | float:
    """Nats per example (a negative log-likelihood of ``dims`` discrete values) → bits per value."""
    return nats / (dims * LN2)


def to_levels(x: Tensor, levels: int) -> Tensor:
    """Images in [0, 1] (uint8/255, or a binarised 0/1) → integer pixel values 0..levels-1."""
    return (x * (levels - 1)).round().long().clamp_(0, levels - 1)


def discrete_nll(logits: Tensor, target: Tensor) -> Tensor:
    """Negative log-likelihood in nats per example of integer pixels ``target`` (B×C×H×W) under independent
    categoricals ``logits`` (B×C×L×H×W: L-way per pixel value, given whatever the model conditioned on)."""
    b, c, levels, h, w = logits.shape
    nll = F.cross_entropy(logits.float().reshape(b * c, levels, h, w), target.reshape(b * c, h, w), reduction="none")
    return nll.reshape(b, -1).sum(1)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in nats per example, in closed form (Kingma & Welling, app. B)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (((z - mu) ** 2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)


def categorical_baseline_bits(train: np.ndarray, test: np.ndarray, levels: int = 256) -> float:
    """Bits/dim of ``test`` under one independent ``levels``-way histogram per pixel position, counted on
    ``train`` with add-one smoothing (so an unseen value costs bits, never infinity)."""
    train = np.asarray(train).reshape(len(train), -1).astype(np.int64)
    test = np.asarray(test).reshape(len(test), -1).astype(np.int64)
    dims = train.shape[1]
    counts = np.ones((dims, levels), dtype=np.float64)
    np.add.at(counts, (np.broadcast_to(np.arange(dims), train.shape), train), 1.0)
    logp = np.log2(counts / counts.sum(1, keepdims=True))
    return float(-logp[np.arange(dims), test].sum() / test.size)


def xz_bits(images: np.ndarray) -> float:
    """Bits/dim of ``images`` (integer pixels, one byte each) compressed as ``xz -9`` does (liblzma, preset 9,
    the .xz container): what a general-purpose compressor achieves on the same bytes."""
    raw = np.ascontiguousarray(np.asarray(images, dtype=np.uint8)).tobytes()
    return 8.0 * len(lzma.compress(raw, format=lzma.FORMAT_XZ, preset=9)) / len(raw)


def log_mean_exp(x: Tensor, dim: int) -> Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])
