"""A variance-stabilising transform learned on the image itself, with the prior frozen (Noise2VST).

Herbreteau & Unser, "Self-Calibrated Variance-Stabilizing Transformations for Real-World Image
Denoising", ICCV 2025.  The image ``z`` is brought to [0, 1] by its min and max; a monotone
piecewise-linear spline ``f_θ`` on K knots ``x_k = k/(K − 1)`` with values

    y_0 = θ_0,   y_k = y_{k−1} + e^{θ_k} + ε   (k = 1 … K − 1, ε = 1e-6)

is strictly increasing for every θ, so its exact inverse exists; the way back adds an affine term,

    f⁻¹_{θ,α,β}(v) = f_θ⁻¹(v) + α·v + β,

which absorbs the bias an exact algebraic inverse has (E[f(z)] ≠ f(E[z]), Jensen; the GAT needs its
"exact unbiased inverse" for the same reason).  With a frozen Gaussian denoiser D, the transform is
trained on the noisy image alone by Noise2Self's J-invariant loss:

    L(θ, α, β) = Σ_J ‖ (f⁻¹_{θ,α,β}(D(M_J(f_θ(z)))) − z)_J ‖²,

``J`` a stride-4 grid of pixels (one random offset per batch), ``M_J`` replacing them by the mean of
their four direct neighbours *in the transformed domain*, so D never sees the noise it is scored on.
Since D only denoises well when the noise is Gaussian of the level it is told, minimising L makes the
noise of ``f_θ(z)`` as close to that as a monotone map can: a VST fitted to whatever the noise is,
without a Poisson-Gaussian (or any) model.  The result is ``f⁻¹(D(f(z)))`` back in the image's units.

Here ``D(v) = PriorNet(v, σ_t)`` with a constant σ map, ``σ_t`` = :data:`SIGMA_T`.  Any fixed
``σ_t`` the prior was trained on works, since the spline can scale freely (the prior is bias-free,
``D(c·v, c·σ) = c·D(v, σ)``); 25/255 is the paper's, the middle of the prior's training range
[0, 55/255] (measured against 15/255 in ``benchmarks/prior_vst.py``).  Knots 128, Adam at 1e-2 divided
by 10 at each third of the run, batches of 4 randomly flipped/rotated 64² patches, as the paper.

Settings (``benchmarks/prior_vst.py``, one core, W2S channel-0 frames of FOVs 026 and 027: tuning
frames, not the evaluation's 031-040): the paper's 2000 iterations of 64² patches in fp32 took 1023 s
(wall, on a loaded core) for one 512² frame and gave 28.14 dB on FOV 026 (GAT 28.12); the default,
:data:`ITERATIONS` = 1000 of 32² patches in bf16, 22 CPU-s and 28.25 dB (FOV 027: 32.13, GAT 31.93).
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairless.errors import PairlessError
from pairless.inference.engines import cpu_has_bf16
from pairless.inference.tiling import predict_tiled

KNOTS = 128
EPS = 1e-6  # added to every increment: strictly increasing even where e^θ underflows
SIGMA_T = 25 / 255  # the noise σ the prior is told; the spline brings the image's noise to it
ITERATIONS = 1000
PATCH = 32
BATCH = 4
STRIDE = 4
LR = 1e-2
MIN_PATCH = 16  # below this a patch holds too few masked pixels (16 on the stride-4 grid) to learn from


class LearnedVST(nn.Module):
    """The monotone spline ``f_θ`` on [0, 1] (``forward``), its exact inverse plus ``α·v + β``
    (``inverse``), and the Noise2VST fit (``fit``); the module notes give the equations.

    Starts as the identity with α = β = 0.  Outside [0, 1] (and outside the knot values on the way
    back) both directions continue the end segments linearly, so each is the other's exact inverse on
    the whole real line.
    """

    def __init__(self, knots: int = KNOTS):
        super().__init__()
        if knots < 2:
            raise PairlessError(f"the spline needs at least 2 knots, got {knots}")
        self.knots = knots
        identity = torch.linspace(0.0, 1.0, knots)
        steps = (identity[1:] - identity[:-1] - EPS).log()
        self.theta = nn.Parameter(torch.cat([identity[:1], steps]))
        self.alpha = nn.Parameter(torch.zeros(()))
        self.beta = nn.Parameter(torch.zeros(()))

    def values(self) -> Tensor:
        """The spline's values at the knots, strictly increasing by construction."""
        return torch.cumsum(torch.cat([self.theta[:1], self.theta[1:].exp() + EPS]), 0)

    def forward(self, z: Tensor) -> Tensor:
        """``f_θ(z)`` for ``z`` in [0, 1] (linear beyond)."""
        y = self.values().to(z.dtype)
        position = z * (self.knots - 1)
        # the segment index carries no gradient: the spline is differentiated through its values and t
        left = position.detach().floor().clamp(0, self.knots - 2).long()
        t = position - left
        return y[left] * (1 - t) + y[left + 1] * t

    def inverse(self, v: Tensor, *, bias: bool = True) -> Tensor:
        """``f_θ⁻¹(v) + α·v + β`` (without the affine term when ``bias`` is false)."""
        y = self.values().to(v.dtype)
        # searchsorted finds the segment [y_{i−1}, y_i] holding v; clamping extends the end segments
        right = torch.searchsorted(y, v.detach().contiguous()).clamp(1, self.knots - 1)
        low, high = y[right - 1], y[right]
        z = (right - 1 + (v - low) / (high - low)) / (self.knots - 1)
        return z + self.alpha * v + self.beta if bias else z

    def fit(
        self,
        z: Tensor,
        denoiser: nn.Module,
        *,
        iterations: int = ITERATIONS,
        patch: int = PATCH,
        batch: int = BATCH,
        stride: int = STRIDE,
        lr: float = LR,
        seed: int = 0,
        bf16: bool = False,
    ) -> list[float]:
        """Train θ, α, β on ``z`` (``(N, 1, H, W)`` in [0, 1]) with ``denoiser`` frozen; the loss per step.

        ``denoiser`` maps ``(B, 1, patch, patch)`` to the same shape; it is not modified (a frozen copy
        runs) and its parameters get no gradients.  ``bf16``: run it under bfloat16 autocast (the spline
        and the loss stay float32).  Random patches, flips/rotations and grid offsets come from
        ``numpy.random.default_rng(seed)`` alone.
        """
        n, _, h, w = z.shape
        if patch > min(h, w):
            raise PairlessError(
                f"the image ({h}×{w}) is smaller than the {patch}² training patch; use a smaller patch"
            )
        rng = np.random.default_rng(seed)
        self.to(z.device)
        frozen = copy.deepcopy(denoiser).eval().requires_grad_(False)
        frozen = frozen.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, max(iterations // 3, 1), gamma=0.1)
        z = z.detach().float()
        losses = []
        for _ in range(iterations):
            patches = torch.cat([_random_patch(z, patch, rng) for _ in range(batch)])
            row, col = (int(o) for o in rng.integers(stride, size=2))
            grid = torch.zeros_like(patches)
            grid[..., row::stride, col::stride] = 1.0
            v = self(patches)
            masked = v + grid * (_donut(v) - v)  # J-invariance: the grid's pixels hidden from D
            with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=bf16):
                denoised = frozen(masked.contiguous(memory_format=torch.channels_last))
            out = self.inverse(denoised.float())
            loss = F.mse_loss(out[..., row::stride, col::stride], patches[..., row::stride, col::stride])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        return losses


class ConstantSigma(nn.Module):
    """The prior as a plain Gaussian denoiser ``v -> PriorNet(v, σ·1)`` (for tiling and the fit)."""

    def __init__(self, net: nn.Module, sigma: float = SIGMA_T):
        super().__init__()
        self.net, self.sigma = net, float(sigma)

    @property
    def multiple(self) -> int:
        return self.net.multiple

    def forward(self, v: Tensor) -> Tensor:
        return self.net(v, torch.full_like(v, self.sigma))


def _random_patch(z: Tensor, patch: int, rng: np.random.Generator) -> Tensor:
    """One ``patch``² crop of a random image of ``z``, under one of the 8 flips/rotations."""
    n, _, h, w = z.shape
    k, row, col = int(rng.integers(n)), int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
    crop = z[k : k + 1, :, row : row + patch, col : col + patch]
    turn = int(rng.integers(8))
    crop = crop.flip(-1) if turn % 2 else crop
    return torch.rot90(crop, turn // 2, dims=(-2, -1))


_DONUT = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]]).view(1, 1, 3, 3)


def _donut(v: Tensor) -> Tensor:
    """The mean of each pixel's four direct neighbours (reflected at the border): Noise2Self's fill."""
    return F.conv2d(F.pad(v, (1, 1, 1, 1), mode="reflect"), _DONUT.to(v.dtype))


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the transform is learned: :meth:`LearnedVST.fit`'s options and the σ the prior is told.

    ``bf16``: the prior under bfloat16 autocast during the fit; ``None`` where the hardware computes in
    bf16 natively (emulated bf16 is slower than float32)."""

    iterations: int = ITERATIONS
    patch: int = PATCH
    batch: int = BATCH
    stride: int = STRIDE
    lr: float = LR
    sigma: float = SIGMA_T
    bf16: bool | None = None


DEFAULT = Settings()
OFFICIAL = Settings(iterations=2000, patch=64, batch=4, stride=4, lr=1e-2, sigma=25 / 255, bf16=False)


def _native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def denoise_with_learned_vst(
    x: Tensor,
    net: nn.Module,
    *,
    tile: int,
    overlap: int,
    tta: bool,
    seed: int,
    iterations: int = DEFAULT.iterations,
) -> Tensor:
    """Denoise ``x`` (``(1, 1, H, W)``, float, image units) by a VST learned on it with ``net`` (a
    :class:`~pairless.nets.prior_net.PriorNet`) frozen, in :data:`DEFAULT`'s settings with ``iterations``;
    tiled by ``tile``/``overlap``, 8-fold augmented when ``tta``.  Deterministic for a given ``seed``."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise PairlessError(
            f"the learned VST needs a positive whole number of iterations, not {iterations!r}"
        )
    settings = dataclasses.replace(DEFAULT, iterations=iterations)
    return denoise_learned(x, net, settings, tile=tile, overlap=overlap, tta=tta, seed=seed)


def denoise_learned(
    x: Tensor, net: nn.Module, settings: Settings, *, tile: int, overlap: int, tta: bool, seed: int
) -> Tensor:
    """:func:`denoise_with_learned_vst` with every setting given (e.g. :data:`OFFICIAL`, the paper's)."""
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[:2] != (1, 1):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise PairlessError(f"the learned VST denoises one (1, 1, Y, X) image at a time, got {shape}")
    image = x.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(image).all()):
        raise PairlessError("the image has NaN or Inf values; replace them (e.g. by the median) first")
    low, high = float(image.min()), float(image.max())
    if not high > low:
        raise PairlessError(f"the image is constant ({low}): it has no noise to learn a transform from")
    multiple = net.multiple
    # an image smaller than the patch trains on patches of its own size, down to MIN_PATCH
    patch = min(settings.patch, *image.shape[-2:]) // multiple * multiple
    if patch < max(MIN_PATCH, multiple):
        raise PairlessError(
            f"the image ({image.shape[-2]}×{image.shape[-1]}) is smaller than the {max(MIN_PATCH, multiple)}²"
            " patches the learned VST trains on; use --vst gat"
        )
    spread = high - low
    device = next(net.parameters()).device
    z = ((image - low) / spread).to(device)
    bf16 = settings.bf16 if settings.bf16 is not None else _native_bf16(device)
    # a denoiser runs under no_grad (or inference mode): fitting the transform needs its gradients back,
    # and parameters made outside inference mode
    with torch.inference_mode(False), torch.enable_grad():
        denoiser = ConstantSigma(net, settings.sigma)
        vst = LearnedVST()
        vst.fit(
            z.clone(),
            denoiser,
            iterations=settings.iterations,
            patch=patch,
            batch=settings.batch,
            stride=settings.stride,
            lr=settings.lr,
            seed=seed,
            bf16=bf16,
        )
    with torch.no_grad():
        v = vst(z)
        d = predict_tiled(denoiser, v, tile=tile, overlap=overlap, tta=tta, multiple=multiple)
        out = vst.inverse(d)
    return (out * spread + low).to(x.device, torch.float32)


__all__ = [
    "DEFAULT",
    "OFFICIAL",
    "ConstantSigma",
    "LearnedVST",
    "Settings",
    "denoise_learned",
    "denoise_with_learned_vst",
]
