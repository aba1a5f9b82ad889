"""Classification losses: softmax cross-entropy and the multiclass SVM (hinge) loss.

Both map scores (N, C) and integer labels (N,) to a scalar, the mean over the
batch. Regularisation is not part of the loss here: it is the optimizer's
weight decay (see ``components.optim``).

    >>> import torch
    >>> from components.losses import build_criterion, multiclass_svm_loss
    >>> scores, y = torch.zeros(4, 10), torch.tensor([0, 1, 2, 3])
    >>> float(multiclass_svm_loss(scores, y))      # every wrong class is at the margin
    9.0
    >>> criterion = build_criterion("softmax", label_smoothing=0.1)
    >>> round(float(criterion(scores, y)), 4)      # ln(10) for uniform scores
    2.3026
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CRITERIA",
    "multiclass_svm_loss",
    "softmax_cross_entropy",
    "MulticlassSVMLoss",
    "build_criterion",
]

CRITERIA: tuple[str, ...] = ("softmax", "svm")


def multiclass_svm_loss(scores: Tensor, y: Tensor, margin: float = 1.0) -> Tensor:
    """Weston-Watkins multiclass SVM loss (CS231n section 3.1), mean over the batch.

    ``L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + margin)``.
    """
    if scores.ndim != 2 or y.ndim != 1 or y.shape[0] != scores.shape[0]:
        raise ValueError(
            f"expected scores (N, C) and labels (N,), got {tuple(scores.shape)} and {tuple(y.shape)}"
        )
    correct = scores.gather(1, y[:, None])  # (N, 1)
    margins = (scores - correct + margin).clamp_min(0.0)
    # The j = y_i term would add exactly `margin` to every sample; drop it.
    margins = margins.masked_fill(F.one_hot(y, scores.shape[1]).bool(), 0.0)
    return margins.sum(dim=1).mean()


def softmax_cross_entropy(scores: Tensor, y: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy, mean over the batch (``F.cross_entropy``)."""
    return F.cross_entropy(scores, y, label_smoothing=label_smoothing)


class MulticlassSVMLoss(nn.Module):
    """Module form of :func:`multiclass_svm_loss`."""

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be positive, got {margin}")
        self.margin = margin

    def forward(self, scores: Tensor, y: Tensor) -> Tensor:
        return multiclass_svm_loss(scores, y, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


def build_criterion(name: str, label_smoothing: float = 0.0, margin: float = 1.0) -> nn.Module:
    """The loss module called ``name`` (one of :data:`CRITERIA`).

    ``label_smoothing`` applies to ``softmax`` only; a non-zero value with
    ``svm`` is an error rather than silently ignored.
    """
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; expected one of {CRITERIA}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if name == "softmax":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if label_smoothing:
        raise ValueError("label_smoothing applies only to the 'softmax' criterion")
    return MulticlassSVMLoss(margin)

