"""Normalization layers for the ISCL normalization study (seed 002; equation numbers are its own).

:func:`make_norm` returns the layer that follows a convolution, :func:`wrap_conv` the convolution
itself (spectral normalization acts on weights, so the layer after it is the identity).  Names:

``batch``           BatchNorm (eqs. 7-9): per channel over (N, H, W); running statistics at inference.
``layer``           LayerNorm (eqs. 10-12): per sample over (C, H, W), per-channel γ, β.
``instance``        InstanceNorm (eqs. 1-4): per sample and channel over (H, W), with γ, β.
``group``           GroupNorm (eqs. 15-17): groups of 32 channels (one group = LayerNorm).
``batch_instance``  ρ·BN + (1-ρ)·IN with a per-channel gate ρ clipped to [0, 1] (Nam & Kim 2018);
                    the BN part uses running statistics at inference.
``batch_instance_iscl``  the same with the official ISCL semantics (``utils/normalization.py``
                    ``BIN``): batch moments even at inference, no running statistics, ε = 1e-7
                    (at batch size 1 this is InstanceNorm, whatever ρ is).
``switchable``      SwitchNorm (eqs. 13-14): softmax-weighted IN/LN/BN means and variances;
                    running BN statistics at inference, so batch size 1 is right.
``spectral``        W / σ(W) on every weight (eqs. 5-6), via torch's parametrization.
``none``            identity.

All statistics are the population (biased) moments of the paper's equations; ε = 1e-5 except where noted.
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = (
    "batch",
    "layer",
    "instance",
    "group",
    "batch_instance",
    "batch_instance_iscl",
    "switchable",
    "spectral",
    "none",
)
GROUP_CHANNELS = 32
EPS = 1e-5
ISCL_EPS = 1e-7  # the official BIN's epsilon


def make_norm(name: str, channels: int) -> nn.Module:
    """The normalization layer called ``name`` for ``channels`` feature maps (identity for spectral)."""
    if name == "batch":
        return nn.BatchNorm2d(channels, eps=EPS)
    if name == "layer":
        return nn.GroupNorm(1, channels, eps=EPS)
    if name == "instance":
        return nn.InstanceNorm2d(channels, eps=EPS, affine=True)
    if name == "group":
        return nn.GroupNorm(max(1, channels // GROUP_CHANNELS), channels, eps=EPS)
    if name == "batch_instance":
        return BatchInstanceNorm2d(channels, running_stats=True)
    if name == "batch_instance_iscl":
        return BatchInstanceNorm2d(channels, running_stats=False, eps=ISCL_EPS)
    if name == "switchable":
        return SwitchNorm2d(channels)
    if name in ("spectral", "none"):
        return nn.Identity()
    raise ValueError(f"unknown normalization {name!r}; expected one of {', '.join(NORMS)}")


def wrap_conv(name: str, conv: nn.Module) -> nn.Module:
    """``conv`` with spectral normalization of its weight if ``name`` is ``spectral``, else unchanged."""
    if name == "spectral":
        return nn.utils.parametrizations.spectral_norm(conv)
    return conv


def project_gates_(module: nn.Module) -> None:
    """Clip every batch-instance gate in ``module`` back to [0, 1]; call after each optimizer step."""
    for layer in module.modules():
        if isinstance(layer, BatchInstanceNorm2d):
            with torch.no_grad():
                layer.rho.clamp_(0.0, 1.0)


def _moments(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)


def _float32(forward):
    """Statistics in float32 even under bf16 autocast (bf16 moments cancel into negative variances)."""

    def wrapped(self, x: torch.Tensor) -> torch.Tensor:
        return forward(self, x.float()).to(x.dtype)

    return wrapped


class _RunningBatchStats(nn.Module):
    """Running per-channel mean and variance, updated like BatchNorm (momentum 0.1, unbiased var)."""

    def __init__(self, channels: int, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def _update(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        with torch.no_grad():
            unbiased = var.flatten() * count / max(count - 1, 1)
            self.running_mean.lerp_(mean.flatten().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)

    def _running(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.running_mean.view(1, -1, 1, 1), self.running_var.view(1, -1, 1, 1)


class BatchInstanceNorm2d(_RunningBatchStats):
    """Batch-instance normalization: ``(ρ·x̂_BN + (1-ρ)·x̂_IN)·γ + β``, ρ ∈ [0, 1] per channel.

    ρ starts at 1 (pure BN) as in ISCL; it is clipped in the forward pass and should be projected
    back with :func:`project_gates_` after each update (the Keras constraint in the official code).
    ``running_stats=False`` is the official ISCL layer: batch moments always, also at inference
    (its running buffers exist but are never updated or read).
    """

    def __init__(self, channels: int, *, running_stats: bool = True, momentum: float = 0.1, eps: float = EPS):
        super().__init__(channels, momentum)
        self.running_stats = running_stats
        self.eps = eps
        self.rho = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    @_float32
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.running_stats:
            mean_b, var_b = _moments(x, (0, 2, 3))
            if self.training and self.running_stats:
                self._update(mean_b, var_b, x.shape[0] * x.shape[2] * x.shape[3])
        else:
            mean_b, var_b = self._running()
        mean_i, var_i = _moments(x, (2, 3))
        rho = self.rho.clamp(0.0, 1.0)
        x_b = (x - mean_b) / torch.sqrt(var_b + self.eps)
        x_i = (x - mean_i) / torch.sqrt(var_i + self.eps)
        return (rho * x_b + (1 - rho) * x_i) * self.weight + self.bias


class SwitchNorm2d(_RunningBatchStats):
    """Switchable normalization (Luo et al. 2019), eqs. 13-14 of seed 002.

    Mean and variance are the softmax-weighted sums of the instance, layer and batch moments, with
    separate importance weights for means and for variances.  The batch moments are replaced by
    running averages at inference, so the output for one image does not depend on its batch.
    """

    def __init__(self, channels: int, *, momentum: float = 0.1):
        super().__init__(channels, momentum)
        self.mean_weight = nn.Parameter(torch.ones(3))  # order: instance, layer, batch
        self.var_weight = nn.Parameter(torch.ones(3))
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    @_float32
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_in, var_in = _moments(x, (2, 3))
        # LN and BN moments from IN ones: E[x²] is averaged, so the variances are exact (eqs. 8, 11)
        second_in = var_in + mean_in**2
        mean_ln = mean_in.mean(1, keepdim=True)
        var_ln = (second_in.mean(1, keepdim=True) - mean_ln**2).clamp_min(0)
        if self.training:
            mean_bn = mean_in.mean(0, keepdim=True)
            var_bn = (second_in.mean(0, keepdim=True) - mean_bn**2).clamp_min(0)
            self._update(mean_bn, var_bn, x.shape[0] * x.shape[2] * x.shape[3])
        else:
            mean_bn, var_bn = self._running()
        wm = torch.softmax(self.mean_weight, 0)
        wv = torch.softmax(self.var_weight, 0)
        mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
        var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
        return (x - mean) / torch.sqrt(var + EPS) * self.weight + self.bias
