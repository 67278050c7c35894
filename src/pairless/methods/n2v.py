"""Noise2Void (Krull et al. 2019), N2V2 (Höck et al. 2022) and structN2V (Broaddus et al. 2020).

A U-Net learns to predict each pixel from its surroundings alone: in every training patch a
stratified ~0.2% of pixels (the blind spots) are replaced, and the loss compares the network's
output at exactly those pixels with their original noisy values.  Because pixel-wise independent
noise cannot be predicted from the neighbours, the network learns the signal.  The anchors' bugs
(those of n2v and CAREamics, listed in the N2V2 paper and
the projects' issue trackers) are avoided on purpose: the replacement neighbour is drawn uniformly among the
non-centre offsets, every masked pixel counts in the loss even when its replacement happens to equal
its value, the 3D grid has the requested density, and the best-validation checkpoint is the one kept.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field

from pairless.errors import PairlessError
from pairless.nets.unet import UNet
from pairless.training import selfsup
from pairless.training.selfsup import SelfSupervisedConfig


class N2VConfig(SelfSupervisedConfig):
    """Noise2Void / N2V2 / structN2V training; defaults are the ``quick`` profile.

    ``profile="paper"`` gives seed 000's settings (lr 0.004, batch 32, 150 epochs × 200 steps,
    CSBDeep's halving of the learning rate on a validation plateau).  ``n2v2`` switches to median
    replacement, blur-pool and no top skip (Höck et al. 2022).  ``roi`` is the side of the
    neighbourhood a masked pixel's replacement is drawn from (5: the nearest, most similar
    neighbours, as in n2v's BSD68 reproduction).
    """

    PROFILES: ClassVar[dict[str, dict]] = {
        # 0.2 % masked stays: 2 % gained 0.22 dB on one 512² image (σ 25, 600 steps) but lost 1.56 dB
        # in `pairless demo`'s PET study (measured; see the closing note of the self-supervised issue)
        "quick": {},
        "paper": {
            "batch_size": 32,
            "steps": 150 * 200,
            "val_every": 200,
            "lr": 0.004,
            "lr_schedule": "plateau",
        },
    }

    mask_fraction: float = Field(0.002, gt=0, le=0.25)
    roi: int = Field(5, ge=3, le=21)
    n2v2: bool = False
    struct_mask: Literal["none", "horizontal", "vertical"] = "none"
    struct_span: int = Field(5, ge=3, le=21)
    residual: bool = False


# --------------------------------------------------------------------------------------------------
# Masking


@dataclass(frozen=True)
class BlindSpots:
    """A manipulated batch: ``input`` for the network, ``mask`` of the blind spots (both ``(B, 1,
    *spatial)``).

    ``positions`` and ``sources`` are ``(N, 1 + ndim)`` indices (batch, *spatial) of each blind spot and
    of the neighbour its value was copied from (``sources`` is ``None`` for median replacement).
    """

    input: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    sources: torch.Tensor | None


def stratified_positions(
    shape: tuple[int, ...], *, fraction: float, generator: torch.Generator, device=None
) -> torch.Tensor:
    """One random pixel per grid box of volume ``1/fraction`` in each of ``shape[0]`` patches of
    ``shape[1:]``.

    The box side is ``fraction ** (-1/ndim)`` on every axis (a cube root in 3D, unlike n2v's square
    root), boxes start at 0 and the pixel is uniform in its box; points falling past the edge are
    dropped, so every pixel is chosen with probability ``fraction``.  Returns ``(N, 1+ndim)``, unique:
    a pixel straddling two boxes may be drawn by both (rarely) and is then one blind spot.
    """
    batch, *spatial = shape
    ndim = len(spatial)
    side = fraction ** (-1.0 / ndim)
    axes = [torch.arange(math.ceil(n / side), device=device, dtype=torch.float32) * side for n in spatial]
    origins = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, ndim)
    jitter = torch.rand((batch, origins.shape[0], ndim), generator=generator, device=device) * side
    points = (origins + jitter).floor().long()
    inside = (points < torch.tensor(spatial, device=device)).all(dim=-1)
    b = torch.arange(batch, device=device)[:, None].expand(-1, origins.shape[0])
    return torch.unique(torch.cat([b[inside][:, None], points[inside]], dim=1), dim=0)


def neighbour_offsets(ndim: int, *, roi: int, struct: str = "none", struct_span: int = 5) -> torch.Tensor:
    """All offsets in the ``roi``-wide neighbourhood a blind spot may copy from, ``(K, ndim)``.

    The centre is excluded (a pixel must never be its own replacement) and, with a structN2V mask,
    so is the masked line: its noise is correlated with the centre's, which is why it is masked.
    """
    r = roi // 2
    table = torch.tensor(list(itertools.product(range(-r, r + 1), repeat=ndim)))
    keep = table.abs().sum(dim=1) > 0
    if struct != "none":
        axis = _struct_axis(ndim, struct)
        others = [a for a in range(ndim) if a != axis]
        on_line = (table[:, others] == 0).all(dim=1) & (table[:, axis].abs() <= struct_span // 2)
        keep &= ~on_line
    return table[keep]


def _struct_axis(ndim: int, struct: str) -> int:
    return ndim - 1 if struct == "horizontal" else ndim - 2


def _mirror(points: torch.Tensor, centre: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
    """Reflect an offset that leaves the patch through its centre (``c - o`` for ``c + o``).

    Clamping instead would pile the draws onto the border pixel, and at the border even onto the
    centre itself; the mirrored offset keeps its length and is still never zero.
    """
    outside = (points < 0) | (points >= spatial)
    return torch.where(outside, 2 * centre - points, points)


def manipulate(
    batch: torch.Tensor,
    *,
    generator: torch.Generator,
    fraction: float = 0.002,
    roi: int = 5,
    replacement: str = "uniform",
    struct: str = "none",
    struct_span: int = 5,
) -> BlindSpots:
    """Hide a stratified ``fraction`` of the pixels of each patch of ``batch`` ``(B, 1, *spatial)``.

    ``replacement="uniform"`` (N2V) copies a neighbour drawn uniformly among the allowed offsets of
    the ``roi`` neighbourhood; ``"median"`` (N2V2) uses the median of those neighbours.  ``struct``
    (``"horizontal"`` or ``"vertical"``, structN2V) also overwrites the ``struct_span``-long line
    through each blind spot with values drawn uniformly between the patch's minimum and maximum.
    Patches must be larger than ``roi`` on every axis.
    """
    spatial = batch.shape[2:]
    ndim = len(spatial)
    device = batch.device
    if min(spatial) <= roi:
        raise ValueError(f"patches {tuple(spatial)} must be larger than roi={roi} on every axis")
    positions = stratified_positions(
        (batch.shape[0], *spatial), fraction=fraction, generator=generator, device=device
    )
    offsets = neighbour_offsets(ndim, roi=roi, struct=struct, struct_span=struct_span).to(device)
    size = torch.tensor(spatial, device=device)
    centre = positions[:, 1:]
    image = batch[:, 0]
    if replacement == "uniform":
        pick = torch.randint(len(offsets), (len(positions),), generator=generator, device=device)
        source = _mirror(centre + offsets[pick], centre, size)
        sources = torch.cat([positions[:, :1], source], dim=1)
        values = image[tuple(sources.T)]
    elif replacement == "median":
        around = _mirror(centre[:, None, :] + offsets[None], centre[:, None, :], size)
        b = positions[:, :1, None].expand(-1, len(offsets), 1)
        values = image[tuple(torch.cat([b, around], dim=2).reshape(-1, ndim + 1).T)]
        values = values.reshape(len(positions), len(offsets)).median(dim=1).values
        sources = None
    else:
        raise ValueError(f"replacement must be 'uniform' or 'median', not {replacement!r}")
    out = image.clone()
    if struct != "none":
        _mask_lines(
            out, image, positions, axis=_struct_axis(ndim, struct), span=struct_span, generator=generator
        )
    out[tuple(positions.T)] = values
    mask = torch.zeros_like(image, dtype=torch.bool)
    mask[tuple(positions.T)] = True
    return BlindSpots(out[:, None], mask[:, None], positions, sources)


def _mask_lines(out, image, positions, *, axis: int, span: int, generator) -> None:
    """structN2V: random values on the line through each blind spot (Broaddus et al. 2020, Fig. 2)."""
    half = span // 2
    steps = torch.tensor([d for d in range(-half, half + 1) if d != 0], device=image.device)
    line = positions[:, None, :].repeat(1, len(steps), 1)
    line[..., 1 + axis] += steps
    line = line.reshape(-1, positions.shape[1])
    inside = (line[:, 1 + axis] >= 0) & (line[:, 1 + axis] < image.shape[1 + axis])
    line = line[inside]
    flat = image.reshape(image.shape[0], -1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    u = torch.rand(len(line), generator=generator, device=image.device, dtype=image.dtype)
    out[tuple(line.T)] = low[line[:, 0]] + u * (high - low)[line[:, 0]]


def n2v_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked MSE, seed 000 Eq. 4 (Krull et al. 2019): mean over blind spots i of (f(x̃)_i − x_i)².

    The average runs over ``mask``, not over ``manipulated != original``: a blind spot whose
    replacement equals its value (ties, integer data, median replacement) is still a training target.
    """
    m = mask.to(torch.float32)
    return ((prediction.float() - target.float()) ** 2 * m).sum() / m.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------------------
# The method


class N2V(selfsup.Objective):
    """Blind-spot training of a U-Net: mask, predict, masked MSE; validated on fixed masks of held-out
    patches."""

    name = "n2v"
    title = "Noise2Void"
    config_class = N2VConfig
    # A blind-spot loss sees ~0.2% of pixels: with few validation patches it is too noisy to pick the
    # best checkpoint by, so each patch is validated under several fixed masks (at least 256 in all).
    val_repeats = 256

    def make_net(self) -> UNet:
        c = self.config
        return UNet(
            ndim=c.ndim,
            depth=c.depth,
            filters=c.filters,
            residual=c.residual,
            blur_pool=c.n2v2,
            skip_top=not c.n2v2,
        )

    def loss(self, net, batch, *, generator, progress):
        c = self.config
        spots = manipulate(
            batch,
            generator=generator,
            fraction=c.mask_fraction,
            roi=c.roi,
            replacement="median" if c.n2v2 else "uniform",
            struct=c.struct_mask,
            struct_span=c.struct_span,
        )
        prediction = net(spots.input)
        return n2v_loss(prediction, batch, spots.mask)

    def augment(self) -> bool:
        return (
            self.config.struct_mask == "none"
        )  # a rotation would turn a horizontal noise correlation vertical

    def check_patch(self, patch, multiple):
        super().check_patch(patch, multiple)
        if any(p <= self.config.roi for p in patch):
            raise PairlessError(
                f"patch size {patch} must be larger than roi={self.config.roi}; change patch_size/patch_depth"
                " in the configuration"
            )
