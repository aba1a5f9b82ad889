"""The REINFORCE-with-baseline loss (§14), in plain PyTorch so it can be checked by hand.

For one batch of complete episodes, with returns-to-go ``G_t = sum_k gamma^k r_{t+k}``, a learned
baseline ``b(s_t)`` (the value head) and advantages ``A_t = G_t - b(s_t)`` (the baseline is not
differentiated through here, it only reduces variance)::

    policy_loss = -mean(log pi(a_t|s_t) * A_t)
    vf_loss     = mean((b(s_t) - G_t)^2)
    total       = policy_loss + vf_coeff * vf_loss - entropy_coeff * mean(entropy)

``normalize=True`` standardises ``A_t`` within the batch (a common variance reduction; it rescales
the step, not its direction in expectation).
"""

from __future__ import annotations

import torch
from torch import Tensor


def reinforce_loss(logp: Tensor, returns: Tensor, values: Tensor, entropy: Tensor | None = None, *,
                   vf_coeff: float = 0.5, entropy_coeff: float = 0.0,
                   normalize: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss and its parts (``policy_loss``, ``vf_loss``, ``entropy``, ``advantage_mean``)."""
    advantages = returns - values.detach()
    if normalize and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = -(logp * advantages).mean()
    vf_loss = torch.mean((values - returns) ** 2)
    mean_entropy = entropy.mean() if entropy is not None else torch.zeros((), device=logp.device)
    total = policy_loss + vf_coeff * vf_loss - entropy_coeff * mean_entropy
    parts = {"policy_loss": policy_loss.detach(), "vf_loss": vf_loss.detach(), "entropy": mean_entropy.detach(),
             "advantage_mean": (returns - values.detach()).mean()}
    return total, parts


def returns_to_go(rewards: Tensor, gamma: float) -> Tensor:
    """Discounted returns-to-go of one episode's rewards (reference implementation for tests)."""
    out = torch.empty_like(rewards)
    running = torch.zeros((), dtype=rewards.dtype)
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out
