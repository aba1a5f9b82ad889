"""Image classifiers in plain PyTorch: input normalisation, three nets, a factory.

The preprocessing travels *inside* the model, so a saved model takes raw images:

    >>> import torch
    >>> from components.models import (ImageClassifier, Normalize, build_model,
    ...                                normalization_stats)
    >>> images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)   # N,H,W
    >>> mean, std = normalization_stats([images[:32], images[32:]], mode="per_channel")
    >>> net = build_model("convnet", in_channels=1, num_classes=10, image_size=28)
    >>> model = ImageClassifier(Normalize(mean, std), net)
    >>> logits = model(images.unsqueeze(1).float() / 255)        # training path
    >>> classes, probs = model.predict_uint8(images[:4])          # serving path
    >>> classes.shape, probs.shape
    (torch.Size([4]), torch.Size([4, 10]))

Normalisation statistics can be computed streaming or across workers: each
worker calls :func:`accumulate_moments` on its shards (exact float64 sums of the
raw uint8 values, so partial results combine exactly in any order) and the
driver calls :func:`finalize_moments` on the list of partial results.

Nets (all built as ``Net(in_channels, num_classes, image_size, ...)``):

* :class:`SoftmaxLinear` - flatten + one ``Linear`` (CS231n linear classifier).
* :class:`ConvNet` - a small VGG-style net, cheap enough for CPU training.
* :class:`ResNet` - CIFAR-style ResNet (He et al. 2016, section 4.2); see :func:`resnet`.
"""

from __future__ import annotations

from typing import Iterable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MODEL_NAMES",
    "NORMALIZATION_MODES",
    "NormalizationMode",
    "Normalize",
    "accumulate_moments",
    "finalize_moments",
    "normalization_stats",
    "ImageClassifier",
    "SoftmaxLinear",
    "ConvNet",
    "BasicBlock",
    "ResNet",
    "resnet",
    "build_model",
    "count_parameters",
    "count_macs",
]

MODEL_NAMES: tuple[str, ...] = ("softmax", "convnet", "resnet")

NormalizationMode = Literal["per_channel", "mean_image"]
NORMALIZATION_MODES: tuple[str, ...] = ("per_channel", "mean_image")

# Floor on a std before dividing by it: a constant channel (or a constant
# dataset in tests) would otherwise turn every input into inf/nan.
_MIN_STD = 1e-6


# --------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------


class Normalize(nn.Module):
    """``(x - mean) / std`` for float images in [0, 1] of shape (N, C, H, W).

    ``mean``/``std`` are stored as buffers (so they are saved in the state dict
    and move with ``.to(device)``) in one of two layouts:

    * per-channel (VGG style): ``mean`` and ``std`` of shape (C, 1, 1);
    * mean-image (AlexNet style): ``mean`` of shape (C, H, W), the mean image,
      and ``std`` of shape (1, 1, 1), one global std.

    A 1-D ``mean``/``std`` of length C is accepted and reshaped to (C, 1, 1); a
    0-D ``std`` is reshaped to (1, 1, 1).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        mean = _as_chw(torch.as_tensor(mean, dtype=torch.float32), "mean")
        std = _as_chw(torch.as_tensor(std, dtype=torch.float32), "std")
        try:
            torch.broadcast_shapes(mean.shape, std.shape)
        except RuntimeError as err:
            raise ValueError(
                f"mean {tuple(mean.shape)} and std {tuple(std.shape)} do not broadcast"
            ) from err
        if std.shape[0] not in (1, mean.shape[0]):
            raise ValueError(f"std has {std.shape[0]} channels, mean has {mean.shape[0]}")
        if not torch.isfinite(mean).all() or not torch.isfinite(std).all():
            raise ValueError("mean and std must be finite")
        if (std < 0).any():
            raise ValueError("std must be non-negative")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clamp_min(_MIN_STD))

    @classmethod
    def identity(cls, in_channels: int) -> "Normalize":
        """A no-op normalisation (mean 0, std 1) for ``in_channels`` channels."""
        return cls(torch.zeros(in_channels), torch.ones(in_channels))

    @property
    def in_channels(self) -> int:
        return int(self.mean.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={tuple(self.mean.shape)}, std={tuple(self.std.shape)}"


def _as_chw(t: Tensor, name: str) -> Tensor:
    """Reshape a 0-D/1-D statistic to the 3-D (C, H, W) layout Normalize stores."""
    if t.ndim == 0:
        return t.reshape(1, 1, 1)
    if t.ndim == 1:
        return t.reshape(-1, 1, 1)
    if t.ndim == 3:
        return t
    raise ValueError(f"{name} must be 0-D, 1-D (C,) or 3-D (C,H,W), got shape {tuple(t.shape)}")


def _as_nhwc_uint8(batch: Tensor | np.ndarray) -> np.ndarray:
    """View a uint8 batch of shape (N,H,W) or (N,H,W,C) as a NumPy (N,H,W,C) array."""
    arr = batch.detach().cpu().numpy() if isinstance(batch, Tensor) else np.asarray(batch)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 batch, got dtype {arr.dtype}")
    if arr.ndim == 3:
        return arr[..., None]
    if arr.ndim == 4:
        return arr
    raise ValueError(f"expected shape (N,H,W) or (N,H,W,C), got {arr.shape}")


def accumulate_moments(batch: Tensor | np.ndarray) -> dict[str, np.ndarray | int]:
    """Partial sums of one uint8 batch (N,H,W) or (N,H,W,C), for later combination.

    Returns ``{"count": N, "sum": (H,W,C) float64, "sumsq": (H,W,C) float64}``
    over the *raw* 0-255 values. Raw uint8 sums are integers far below 2**53, so
    float64 holds them exactly: partial results from any number of workers add
    up to the same totals regardless of order. Plain NumPy, so they pickle.
    """
    arr = _as_nhwc_uint8(batch)
    values = arr.astype(np.float64)
    return {
        "count": int(arr.shape[0]),
        "sum": values.sum(axis=0),
        "sumsq": np.square(values).sum(axis=0),
    }


def finalize_moments(
    partials: Sequence[dict[str, np.ndarray | int]], mode: NormalizationMode
) -> tuple[Tensor, Tensor]:
    """Combine :func:`accumulate_moments` results into ``(mean, std)`` on the [0, 1] scale.

    ``mode="per_channel"``: mean and std of every channel over all images and
    pixels, shapes (C,1,1). ``mode="mean_image"``: the per-pixel mean image,
    shape (C,H,W), and the std of all values in the dataset, shape (1,1,1)
    (i.e. ``np.std`` of the whole array). Both stds are population stds (ddof=0).
    """
    if mode not in NORMALIZATION_MODES:
        raise ValueError(f"unknown normalization mode {mode!r}; expected one of {NORMALIZATION_MODES}")
    partials = [p for p in partials if int(p["count"]) > 0]
    if not partials:
        raise ValueError("no images to compute normalization statistics from")
    shapes = {np.shape(p["sum"]) for p in partials}
    if len(shapes) != 1:
        raise ValueError(f"partial sums disagree on image shape: {sorted(shapes)}")
    count = sum(int(p["count"]) for p in partials)
    total = np.sum([p["sum"] for p in partials], axis=0) / 255.0  # (H,W,C)
    total_sq = np.sum([p["sumsq"] for p in partials], axis=0) / 255.0**2
    height, width, _ = total.shape
    if mode == "per_channel":
        n = count * height * width
        mean = total.sum(axis=(0, 1)) / n
        var = total_sq.sum(axis=(0, 1)) / n - mean**2
        mean_chw = mean.reshape(-1, 1, 1)
        std_chw = np.sqrt(np.maximum(var, 0.0)).reshape(-1, 1, 1)
    else:
        n = count * total.size
        global_mean = total.sum() / n
        var = total_sq.sum() / n - global_mean**2
        mean_chw = (total / count).transpose(2, 0, 1)
        std_chw = np.sqrt(max(var, 0.0)).reshape(1, 1, 1)
    return (
        torch.from_numpy(np.ascontiguousarray(mean_chw)).float(),
        torch.from_numpy(np.ascontiguousarray(std_chw)).float(),
    )


def normalization_stats(
    batches: Iterable[Tensor | np.ndarray], mode: NormalizationMode
) -> tuple[Tensor, Tensor]:
    """``(mean, std)`` for :class:`Normalize` from an iterable of uint8 NHWC/NHW batches.

    Streams: only one batch and the running sums are held in memory.
    """
    running: dict[str, np.ndarray | int] | None = None
    for batch in batches:
        part = accumulate_moments(batch)
        if running is None:
            running = part
        else:
            running = {key: running[key] + part[key] for key in ("count", "sum", "sumsq")}
    if running is None:
        raise ValueError("no batches to compute normalization statistics from")
    return finalize_moments([running], mode)


# --------------------------------------------------------------------------
# Classifier wrapper (training + serving path)
# --------------------------------------------------------------------------


class ImageClassifier(nn.Module):
    """``net(normalize(x))``: float [0,1] NCHW images in, logits out.

    :meth:`predict_uint8` is the serving path: raw uint8 images in, classes and
    probabilities out, so a saved model needs no separate preprocessing code.
    """

    def __init__(self, normalize: Normalize, net: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net

    @property
    def in_channels(self) -> int:
        return self.normalize.in_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.normalize(x))

    def predict_uint8(self, images: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """Classify uint8 images of shape (N,H,W) or (N,H,W,C).

        Returns ``(classes int64 (N,), probs float32 (N, num_classes))`` on the
        CPU. Runs in eval mode without gradients and restores the previous
        train/eval mode afterwards (BatchNorm in train mode would make a
        prediction depend on the rest of the request batch).
        """
        x = torch.as_tensor(images)
        if x.dtype != torch.uint8:
            raise ValueError(f"predict_uint8 expects uint8 images, got {x.dtype}")
        if x.ndim == 3:
            x = x.unsqueeze(-1)
        if x.ndim != 4:
            raise ValueError(f"expected images of shape (N,H,W) or (N,H,W,C), got {tuple(x.shape)}")
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"model takes {self.in_channels} channels, images have {x.shape[-1]}")
        device = self.normalize.mean.device
        x = x.to(device).permute(0, 3, 1, 2).float().div_(255.0)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                probs = torch.softmax(self(x).float(), dim=1)
        finally:
            self.train(was_training)
        return probs.argmax(dim=1).cpu(), probs.cpu()


# --------------------------------------------------------------------------
# Nets
# --------------------------------------------------------------------------


class SoftmaxLinear(nn.Module):
    """Flatten + one ``Linear``: the linear classifier ``s = W x + b``.

    Each row of ``W`` is a class template; :meth:`templates` returns them as
    images. Weights start as ``init_std * randn`` and biases at 0 (CS231n uses
    0.001), which makes the initial softmax loss ~ln(C) and SVM loss ~C-1.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        dropout: float = 0.0,
        init_std: float = 0.001,
    ) -> None:
        super().__init__()
        _check_dims(in_channels, num_classes, image_size)
        self.input_shape = (in_channels, image_size, image_size)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels * image_size * image_size, num_classes)
        nn.init.normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(x.flatten(1)))

    def templates(self) -> Tensor:
        """The weight rows reshaped to images: (num_classes, C, H, W)."""
        return self.fc.weight.detach().reshape(-1, *self.input_shape)


def _conv_bn_relu(in_ch: int, out_ch: int, batchnorm: bool) -> list[nn.Module]:
    # A conv followed by BN needs no bias: BN's shift makes it redundant.
    return [
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not batchnorm),
        nn.BatchNorm2d(out_ch) if batchnorm else nn.Identity(),
        nn.ReLU(inplace=True),
    ]


class ConvNet(nn.Module):
    """Small VGG-style net: [conv3x3-BN-ReLU x2, maxpool] x2, dropout, linear head.

    Channels are ``width`` in the first block and ``2*width`` in the second; the
    head is a single ``Linear`` on the flattened (2w, S/4, S/4) feature map
    (kept spatial rather than globally pooled: position matters on centred
    datasets like Fashion-MNIST and the head costs only ~31k MACs at 28px).

    Cost at 28x28x1, 10 classes (measured with :func:`count_macs`):
    ``width=32``: 18.3 MMACs, 0.10M params; ``width=24``: 10.3 MMACs, 0.06M params.
    Almost all of it is the two convs at full resolution, ~7056*w**2 MACs each.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        width: int = 32,
        dropout: float = 0.1,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        _check_dims(in_channels, num_classes, image_size)
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        w = width
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, w, batchnorm),
            *_conv_bn_relu(w, w, batchnorm),
            nn.MaxPool2d(2),
            *_conv_bn_relu(w, 2 * w, batchnorm),
            *_conv_bn_relu(2 * w, 2 * w, batchnorm),
            nn.MaxPool2d(2),
        )
        # Two 2x2 pools floor the size twice, which equals image_size // 4. The
        # adaptive pool is a no-op at the declared size and keeps the head's
        # input fixed if a slightly different size is fed in.
        head_size = max(1, image_size // 4)
        self.pool = nn.AdaptiveAvgPool2d(head_size)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(2 * w * head_size * head_size, num_classes)
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.features(x))
        return self.fc(self.dropout(x.flatten(1)))


class _PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially, zero-pad the new channels (no parameters)."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU (He et al. 2016, Fig. 2)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        *,
        shortcut: Literal["A", "B"] = "B",
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(out_ch) if batchnorm else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=not batchnorm)
        self.bn2 = nn.BatchNorm2d(out_ch) if batchnorm else nn.Identity()
        self.shortcut: nn.Module
        if stride == 1 and in_ch == out_ch:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = _PadShortcut(stride, out_ch - in_ch)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=not batchnorm),
                nn.BatchNorm2d(out_ch) if batchnorm else nn.Identity(),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class ResNet(nn.Module):
    """CIFAR ResNet: conv3x3, three stages of ``n`` BasicBlocks, global avg pool, linear.

    Stage widths are ``w, 2w, 4w`` and stages 2 and 3 start with stride 2, so
    depth = 6n + 2 (n=3 is ResNet-20). ``image_size`` is accepted for a uniform
    constructor; the global pool makes any size >= 8 work.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        depth: int = 20,
        width: int = 16,
        shortcut: Literal["A", "B"] = "B",
        batchnorm: bool = True,
        dropout: float = 0.0,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        _check_dims(in_channels, num_classes, image_size)
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, width, batchnorm))
        blocks: list[nn.Module] = []
        in_ch = width
        for stage, out_ch in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride, shortcut=shortcut, batchnorm=batchnorm))
                in_ch = out_ch
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_ch, num_classes)
        _kaiming_init(self)
        if zero_init_residual and batchnorm:
            # Each block then starts as the identity (Goyal et al. 2017), which
            # helps large-batch training.
            for block in blocks:
                assert isinstance(block, BasicBlock)
                nn.init.zeros_(block.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(self.dropout(x.flatten(1)))


def resnet(
    depth: int,
    width: int = 16,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    shortcut: Literal["A", "B"] = "B",
    batchnorm: bool = True,
    dropout: float = 0.0,
    zero_init_residual: bool = False,
) -> ResNet:
    """CIFAR-style ResNet of ``depth`` = 6n+2 layers (20, 32, 44, 56, 110)."""
    return ResNet(
        in_channels,
        num_classes,
        image_size,
        depth=depth,
        width=width,
        shortcut=shortcut,
        batchnorm=batchnorm,
        dropout=dropout,
        zero_init_residual=zero_init_residual,
    )


def _check_dims(in_channels: int, num_classes: int, image_size: int) -> None:
    if in_channels <= 0 or num_classes <= 1 or image_size <= 0:
        raise ValueError(
            f"need in_channels > 0, num_classes > 1, image_size > 0; got "
            f"{in_channels}, {num_classes}, {image_size}"
        )


def _kaiming_init(module: nn.Module) -> None:
    """He init for convs (fan_out, as for ReLU nets), BN at identity, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------
# Factory and accounting
# --------------------------------------------------------------------------


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    width: int | None = None,
    depth: int | None = None,
    dropout: float = 0.0,
    batchnorm: bool = True,
) -> nn.Module:
    """Build the net called ``name`` (one of :data:`MODEL_NAMES`), without normalisation.

    ``width``/``depth`` of ``None`` take the net's default (convnet width 32;
    resnet depth 20, width 16). ``width`` is rejected for ``softmax`` and
    ``depth`` for anything but ``resnet``, so a misrouted option fails loudly
    instead of being ignored. ``batchnorm`` does not apply to ``softmax``.
    """
    if name in TOOLKIT_MODELS:  # issue 3: kNN and hand-made features + linear, built in their modules
        return _build_toolkit(name, in_channels=in_channels, num_classes=num_classes, image_size=image_size, dropout=dropout)
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if depth is not None and name != "resnet":
        raise ValueError(f"depth applies only to 'resnet', not {name!r}")
    if name == "softmax":
        if width is not None:
            raise ValueError("width does not apply to 'softmax'")
        return SoftmaxLinear(in_channels, num_classes, image_size, dropout=dropout)
    if name == "convnet":
        return ConvNet(
            in_channels,
            num_classes,
            image_size,
            width=32 if width is None else width,
            dropout=dropout,
            batchnorm=batchnorm,
        )
    return ResNet(
        in_channels,
        num_classes,
        image_size,
        depth=20 if depth is None else depth,
        width=16 if width is None else width,
        dropout=dropout,
        batchnorm=batchnorm,
    )


#: Nets built in other modules (issue 3): name -> "module:builder(in_channels, num_classes, image_size, **kw)".
TOOLKIT_MODELS = {"knn": "components.knn:build_knn", "hoglinear": "components.features:build_hoglinear"}


def _build_toolkit(name: str, **kw: object) -> nn.Module:
    import importlib

    module, _, builder = TOOLKIT_MODELS[name].partition(":")
    return getattr(importlib.import_module(module), builder)(**kw)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of Conv2d and Linear layers for one (C, H, W) input.

    Counts only those layers (BN, ReLU, pooling and additions are a few percent
    at most). Runs one forward pass in eval mode on zeros, restoring the mode.
    """
    macs = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal macs
        kh, kw = m.kernel_size
        macs += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal macs
        macs += out[0].numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs
