"""Shared pieces of every net: input normalisation, the serving wrapper, init and accounting.

See :mod:`components.models` for the nets and the factory.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


#: Test-time augmentation inside a classifier (``model.tta``): the views (mirrored?, dx, dy) whose logits
#: are averaged in eval mode. ``flip``: the image and its mirror image; ``flip_shift``: those two and each
#: moved one pixel right, left, down and up (zeros come in, as the training crops pad), ten views.
TTA_VIEWS: dict[str, tuple[tuple[bool, int, int], ...]] = {
    "flip": ((False, 0, 0), (True, 0, 0)),
    "flip_shift": tuple((m, dx, dy) for m in (False, True)
                        for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))),
}


#: Rows a test-time view is scored in at a time (a CPU keeps a small convnet's activations in cache).
_TTA_CHUNK = 128


def _view(x: Tensor, mirrored: bool, dx: int, dy: int) -> Tensor:
    """``x`` (N, C, H, W) mirrored left-right if asked, then its content moved ``dx`` pixels right and ``dy``
    down (|d| <= 1), zeros filling the vacated edge."""
    x = x.flip(-1) if mirrored else x
    if not (dx or dy):
        return x
    h, w = x.shape[-2:]
    return F.pad(x, (1, 1, 1, 1))[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


class ImageClassifier(nn.Module):
    """``net(normalize(x))``: float [0,1] NCHW images in, logits out.

    :meth:`predict_uint8` is the serving path: raw uint8 images in, classes and
    probabilities out, so a saved model needs no separate preprocessing code.
    """

    def __init__(self, normalize: Normalize, net: nn.Module, tta: str | None = None) -> None:
        super().__init__()
        if tta not in (None, "none", *TTA_VIEWS):
            raise ValueError(f"unknown test-time augmentation {tta!r}; known: {', '.join(TTA_VIEWS)}")
        self.normalize = normalize
        self.net = net
        self.tta = None if tta in (None, "none") else tta  # eval mode: the mean logits of TTA_VIEWS[tta]

    @property
    def in_channels(self) -> int:
        return self.normalize.in_channels

    @contextlib.contextmanager
    def without_tta(self) -> Iterator[ImageClassifier]:
        """The bare net's predictions in eval mode for a while: the training loop's per-epoch validation, which
        only ranks epochs (the flips cost an extra forward pass per image every epoch); the final evaluation,
        serving, ensembles and ``explain`` see the flips."""
        saved, self.tta = self.tta, None
        try:
            yield self
        finally:
            self.tta = saved

    def forward(self, x: Tensor) -> Tensor:
        if self.tta and not self.training:
            # One view at a time, in chunks, in the layout of the net's weights (channels-last where the evaluate
            # stage put it, as training did): ten views concatenated into one NCHW batch of 10N images ran 3x
            # slower on a CPU. The same chunks whatever the batch, so a served request and the evaluation loop
            # compute the same numbers.
            layout = torch.channels_last if any(
                p.ndim == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
                for p in self.net.parameters()) else torch.contiguous_format
            views = TTA_VIEWS[self.tta]
            total = sum(torch.cat([self.net(self.normalize(c).contiguous(memory_format=layout))
                                   for c in _view(x, *v).split(_TTA_CHUNK)]) for v in views)
            return total / len(views)
        return self.net(self.normalize(x))

    def predict_uint8(self, images: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """Classify uint8 images of shape (N,H,W) or (N,H,W,C).

        Returns ``(classes int64 (N,), probs float32 (N, num_classes))`` on the
        CPU. Runs in eval mode without gradients and restores the previous
        train/eval mode afterwards (BatchNorm in train mode would make a
        prediction depend on the rest of the request batch).
        """
        if isinstance(images, np.ndarray) and not images.flags.writeable:
            # read-only (an Arrow buffer, a served request): torch would share it and warn; it is only read
            # here, but a copy of uint8 pixels costs less than the float conversion below
            images = images.copy()
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
# Helpers shared by the nets
# --------------------------------------------------------------------------


def conv_bn_relu(in_ch: int, out_ch: int, batchnorm: bool) -> list[nn.Module]:
    # A conv followed by BN needs no bias: BN's shift makes it redundant.
    return [
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not batchnorm),
        nn.BatchNorm2d(out_ch) if batchnorm else nn.Identity(),
        nn.ReLU(inplace=True),
    ]


def check_dims(in_channels: int, num_classes: int, image_size: int) -> None:
    if in_channels <= 0 or num_classes <= 1 or image_size <= 0:
        raise ValueError(
            f"need in_channels > 0, num_classes > 1, image_size > 0; got "
            f"{in_channels}, {num_classes}, {image_size}"
        )


def kaiming_init(module: nn.Module) -> None:
    """He init for convs (fan_out, as for ReLU nets), BN at identity, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------
# Accounting
# --------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of Conv2d, ConvTranspose2d and Linear layers for one (C, H, W) input.

    Counts only those layers (BN, ReLU, pooling and additions are a few percent
    at most). Runs one forward pass in eval mode on zeros, restoring the mode.
    """
    macs = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal macs
        kh, kw = m.kernel_size
        macs += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def transposed_hook(m: nn.ConvTranspose2d, inp: tuple[Tensor, ...], _out: Tensor) -> None:
        nonlocal macs  # every input pixel scatters a kh x kw patch into out_channels / groups maps
        kh, kw = m.kernel_size
        macs += inp[0][0].numel() * (m.out_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal macs
        macs += out[0].numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(transposed_hook))
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
