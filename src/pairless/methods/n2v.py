"""Noise2Void (Krull et al. 2019), N2V2 (Höck et al. 2022) and structN2V (Broaddus et al. 2020).

A U-Net learns to predict each pixel from its surroundings alone: in every training patch a
stratified ~0.2% of pixels (the blind spots) are replaced, and the loss compares the network's
output at exactly those pixels with their original noisy values.  Because pixel-wise independent
noise cannot be predicted from the neighbours, the network learns the signal.  The anchors' bugs
(notes/n2v.md §5) are avoided on purpose: the replacement neighbour is drawn uniformly among the
non-centre offsets, every masked pixel counts in the loss even when its replacement happens to equal
its value, the 3D grid has the requested density, and the best-validation checkpoint is the one kept.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch

from pairless.config import N2VConfig
from pairless.denoiser import SPATIAL, Denoiser
from pairless.errors import PairlessError
from pairless.nets.unet import UNet

# --------------------------------------------------------------------------------------------------
# Masking


@dataclass(frozen=True)
class BlindSpots:
    """A manipulated batch: ``input`` for the network, ``mask`` of the blind spots (both ``(B, 1, *spatial)``).

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
    """One random pixel per grid box of volume ``1/fraction`` in each of ``shape[0]`` patches of ``shape[1:]``.

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
    positions = stratified_positions((batch.shape[0], *spatial), fraction=fraction, generator=generator, device=device)
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
        _mask_lines(out, image, positions, axis=_struct_axis(ndim, struct), span=struct_span, generator=generator)
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
# Data: normalised stacks, random augmented patches, a fixed validation split


def _as_stacks(images: list[np.ndarray], *, axes: str, ndim: int) -> list[np.ndarray]:
    """Each image as ``(n, *spatial)`` float32: every non-spatial axis (S, T, C, and Z for 2D) is a batch axis."""
    if not images:
        raise PairlessError("no training images given; pass at least one image")
    if not axes or not set(axes) <= set("STCZYX") or len(set(axes)) != len(axes) or not axes.endswith("YX"):
        raise PairlessError(f"axes {axes!r} are not valid; use letters from STCZYX ending in YX, e.g. YX, SYX, ZYX")
    spatial = "ZYX"[-ndim:]
    if ndim == 3 and "Z" not in axes:
        raise PairlessError(f"a 3D model needs a Z axis but axes are {axes!r}; pass --axes ZYX or train a 2D model")
    stacks = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != len(axes):
            raise PairlessError(
                f"image {i} has {image.ndim} dimensions (shape {image.shape}) but axes {axes!r} name {len(axes)}; "
                f"pass the matching --axes"
            )
        if image.size == 0:
            raise PairlessError(f"image {i} is empty (shape {image.shape}); remove it from the inputs")
        if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool) or np.iscomplexobj(image):
            raise PairlessError(f"image {i} has unsupported dtype {image.dtype}; convert it to integers or floats")
        batch = [a for a in axes if a not in spatial]
        moved = np.transpose(image, [axes.index(a) for a in batch + list(spatial)])
        stack = moved.reshape(-1, *moved.shape[len(batch):]).astype(np.float32)
        if not np.isfinite(stack).all():
            raise PairlessError(f"image {i} contains NaN or Inf; replace them (e.g. with the background value)")
        stacks.append(stack)
    return stacks


class _PatchSampler:
    """Random patches from normalised stacks, avoiding a fixed set of validation cells."""

    def __init__(self, stacks: list[np.ndarray], patch: tuple[int, ...], *, val_fraction: float, max_val: int, seed: int):
        self.stacks, self.patch = stacks, patch
        for i, s in enumerate(stacks):
            if any(n < p for n, p in zip(s.shape[1:], patch)):
                raise PairlessError(
                    f"image {i} (spatial shape {s.shape[1:]}) is smaller than the training patch {patch}; "
                    f"set a smaller patch_size (and patch_depth) in the configuration"
                )
        rng = np.random.default_rng([seed, 1])
        self.cells = [tuple(n // p for n, p in zip(s.shape[1:], patch)) for s in stacks]
        counts = [len(s) * math.prod(c) for s, c in zip(stacks, self.cells)]
        total = sum(counts)
        n_val = min(max_val, max(1, round(val_fraction * total)))
        if total < 2:
            raise PairlessError(
                f"the images hold only one {patch} patch; give larger or more images, or a smaller patch_size"
            )
        chosen = rng.choice(total, size=n_val, replace=False)
        self.val_cells = [np.zeros((len(s), *c), dtype=bool) for s, c in zip(stacks, self.cells)]
        bounds = np.cumsum([0] + counts)
        for flat in chosen:
            i = int(np.searchsorted(bounds, flat, side="right") - 1)
            self.val_cells[i].reshape(-1)[flat - bounds[i]] = True
        # sample images in proportion to their number of possible patch positions
        weights = np.array([len(s) * math.prod(n - p + 1 for n, p in zip(s.shape[1:], patch)) for s in stacks], float)
        self.weights = weights / weights.sum()

    def validation_patches(self) -> np.ndarray:
        out = []
        for stack, cells in zip(self.stacks, self.val_cells):
            for j, *c in np.argwhere(cells):
                out.append(stack[(j, *(slice(k * p, (k + 1) * p) for k, p in zip(c, self.patch)))])
        return np.stack(out)[:, None]

    def _free(self, i: int, j: int, corner: np.ndarray) -> bool:
        lo = corner // self.patch
        hi = np.minimum((corner + np.array(self.patch) - 1) // self.patch, np.array(self.cells[i]) - 1)
        block = self.val_cells[i][(j, *(slice(a, b + 1) for a, b in zip(lo, hi)))]
        return not block.any()

    def draw(self, count: int, rng: np.random.Generator, *, rotate: bool) -> np.ndarray:
        out = np.empty((count, 1, *self.patch), dtype=np.float32)
        k = 0
        for _ in range(100 * count):
            i = rng.choice(len(self.stacks), p=self.weights)
            stack = self.stacks[i]
            j = rng.integers(len(stack))
            corner = np.array([rng.integers(n - p + 1) for n, p in zip(stack.shape[1:], self.patch)])
            if not self._free(i, j, corner):
                continue
            patch = stack[(j, *(slice(c, c + p) for c, p in zip(corner, self.patch)))]
            if rotate:
                patch = np.rot90(patch, rng.integers(4), axes=(-2, -1))
            for axis in (-1, -2):
                if rng.integers(2):
                    patch = np.flip(patch, axis=axis)
            out[k, 0] = patch
            k += 1
            if k == count:
                return out
        raise PairlessError("could not find training patches outside the validation set; use more or larger images")


class _PatchBatches(torch.utils.data.Dataset):
    """Batch ``idx`` of the whole run, drawn from a generator seeded by ``(seed, idx)``: resumable and reproducible."""

    def __init__(self, sampler: _PatchSampler, *, batch_size: int, length: int, seed: int, rotate: bool):
        self.sampler, self.batch_size, self.length, self.seed, self.rotate = sampler, batch_size, length, seed, rotate

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, 2, idx])
        return torch.from_numpy(self.sampler.draw(self.batch_size, rng, rotate=self.rotate))


class _EpochSampler(torch.utils.data.Sampler):
    """Indices ``epoch * n … epoch * n + n - 1``; Lightning calls :meth:`set_epoch` at each epoch.

    In a run of ``w`` processes, rank ``r`` takes batch ``i * w + r`` for its step ``i``: each rank
    draws its own patches, and together they draw the batches one process would in ``w`` times the steps.
    """

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rank, world = _rank_and_world()
        return iter(range(self.epoch * self.n * world + rank, (self.epoch + 1) * self.n * world, world))


def _rank_and_world() -> tuple[int, int]:
    """``(global rank, world size)`` of a data-parallel run, ``(0, 1)`` in a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# --------------------------------------------------------------------------------------------------
# Network, Lightning module, training

VAL_MASKS = 256


def _make_net(config: N2VConfig) -> UNet:
    return UNet(
        ndim=config.ndim,
        depth=config.depth,
        filters=config.filters,
        residual=config.residual,
        blur_pool=config.n2v2,
        skip_top=not config.n2v2,
    )


def _memory_format(ndim: int, channels_last: bool) -> torch.memory_format:
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


class N2VModule(L.LightningModule):
    """Blind-spot training of ``net``: mask, predict, masked MSE; validation with fixed masks."""

    def __init__(self, net: UNet, config: N2VConfig, *, seed: int = 0, channels_last: bool = False):
        super().__init__()
        self.net, self.config, self.seed = net, config, seed
        self.memory_format = _memory_format(config.ndim, channels_last)
        self.net.to(memory_format=self.memory_format)

    def _step(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
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
        prediction = self.net(spots.input.contiguous(memory_format=self.memory_format))
        return n2v_loss(prediction, batch, spots.mask)

    def _generator(self, *key: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(int(np.random.SeedSequence([self.seed, *key]).generate_state(1)[0]))
        return g

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        # the masks are keyed like the batches (see _EpochSampler), so ranks never share a mask
        loss = self._step(batch, self._generator(3, self.global_step * self.trainer.world_size + self.global_rank))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        loss = self._step(batch, self._generator(4, batch_idx))
        # every rank validates the same patches under the same masks: the mean over ranks is each one's value
        self.log("val_loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=True)

    def configure_optimizers(self):
        c = self.config
        opt = torch.optim.Adam(self.parameters(), lr=c.lr, fused=True)
        if c.lr_schedule == "constant":
            return opt
        if c.lr_schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.steps, eta_min=c.lr * 0.01)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        # CSBDeep's schedule, which the seed used: halve on a 10-validation plateau
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=10)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch"}}


def _resolve_precision(config: N2VConfig) -> tuple[str, bool]:
    """``(precision, channels_last)``: bf16 + channels-last on a bf16 CPU or GPU; fp32 NCHW otherwise.

    channels-last only pays off together with bf16 (measured: fp32 channels-last convolutions are far
    slower than NCHW on this CPU).
    """
    precision = config.precision
    if precision == "auto":
        if torch.cuda.is_available():
            precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        else:
            precision = "bf16-mixed" if torch.cpu._is_avx512_bf16_supported() else "32-true"
    elif precision == "16-mixed" and not torch.cuda.is_available():
        raise PairlessError("precision 16-mixed needs a GPU; use bf16-mixed or 32-true on a CPU")
    channels_last = {"on": True, "off": False, "auto": precision != "32-true"}[config.channels_last]
    return precision, channels_last


def fit_n2v(
    images: list[np.ndarray],
    *,
    axes: str,
    out: Path,
    profile: str = "quick",
    config: N2VConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    resume: bool | None = None,
    devices: int = 1,
) -> Denoiser | None:
    """Train Noise2Void on ``images`` (all with the same ``axes``) and write a model folder to ``out``.

    ``config`` (if given) replaces the ``profile``'s settings.  The folder receives ``config.yaml``
    (method, settings, normalisation), ``weights.safetensors`` from the best-validation checkpoint,
    ``training_log.csv``, ``loss.png`` and ``checkpoints/`` (for ``resume``).  Returns the loaded denoiser.

    ``devices > 1`` (or starting under ``torchrun``) trains data-parallel (``pairless.train``), each
    process on its own batches of ``batch_size``; only global rank 0 writes the folder and returns
    the denoiser, the other ranks return ``None``.
    """
    from pairless.modelio import save_model_folder
    from pairless.train import fit_module

    config = config if config is not None else N2VConfig.for_profile(profile)
    out = Path(out)
    stacks = _as_stacks(images, axes=axes, ndim=config.ndim)
    count = sum(s.size for s in stacks)
    mean = sum(float(s.sum(dtype=np.float64)) for s in stacks) / count
    std = math.sqrt(sum(float(np.square(s - mean, dtype=np.float64).sum()) for s in stacks) / count)
    if std == 0:
        raise PairlessError("the training images are constant (std 0); N2V needs images with noise")
    stacks = [((s - mean) / std).astype(np.float32) for s in stacks]
    patch = (config.patch_depth, config.patch_size, config.patch_size) if config.ndim == 3 else (config.patch_size,) * 2
    multiple = 2**config.depth
    if any(p % multiple or p <= config.roi for p in patch):
        raise PairlessError(
            f"patch size {patch} must be a multiple of 2**depth = {multiple} and larger than roi={config.roi}; "
            f"change patch_size/patch_depth in the configuration"
        )
    sampler = _PatchSampler(stacks, patch, val_fraction=config.val_fraction, max_val=config.max_val_patches, seed=seed)
    rotate = config.struct_mask == "none"  # a rotation would turn a horizontal noise correlation vertical
    train = torch.utils.data.DataLoader(
        _PatchBatches(sampler, batch_size=config.batch_size, length=config.val_every, seed=seed, rotate=rotate),
        batch_size=None,
        sampler=_EpochSampler(config.val_every),
    )
    # A blind-spot loss sees ~0.2% of pixels: with few validation patches it is too noisy to pick the
    # best checkpoint by, so each patch is validated under several fixed masks (at least 256 in all).
    held_out = sampler.validation_patches()
    held_out = np.concatenate([held_out] * math.ceil(VAL_MASKS / len(held_out)))
    val = torch.utils.data.DataLoader(torch.from_numpy(held_out), batch_size=config.batch_size)
    precision, channels_last = _resolve_precision(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _make_net(config)
    module = N2VModule(net, config, seed=seed, channels_last=channels_last)
    best = fit_module(
        module,
        train,
        val,
        out_dir=out,
        max_steps=config.steps,
        val_every_n_steps=config.val_every,
        seed=seed,
        resume=resume,
        precision=precision,
        progress=progress,
        devices=devices,
        use_distributed_sampler=False,  # _EpochSampler gives each rank its own batches
    )
    rank, world = _rank_and_world()
    if rank != 0:
        return None
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    weights = {k.removeprefix("net."): v.contiguous() for k, v in state.items() if k.startswith("net.")}
    model_config = {
        "method": "n2v",
        **config.model_dump(mode="json"),
        "normalisation": {"mean": mean, "std": std},
        "axes": axes,
        "seed": seed,
        "world_size": world,
        "best_step": int(checkpoint["global_step"]),
    }
    save_model_folder(out, config=model_config, weights=weights)
    return load_denoiser(model_config, weights)


# --------------------------------------------------------------------------------------------------
# Prediction


class N2VDenoiser(Denoiser):
    """A trained N2V network with its normalisation; tiles large images through ``pairless.predict``."""

    def __init__(self, net: UNet, *, mean: float, std: float, tile: int, overlap: int, tta: bool):
        super().__init__()
        self.net = net.eval()
        self.spatial_ndim = net.ndim
        self.mean, self.std = mean, std
        self.tile, self.overlap, self.tta = tile, overlap, tta

    def forward(self, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        if y.ndim != 2 + self.spatial_ndim:
            raise PairlessError(
                f"this {self.spatial_ndim}D model needs (B, 1, {', '.join(SPATIAL[-self.spatial_ndim:])}) input, "
                f"got shape {tuple(y.shape)}"
            )
        x = (y.float() - self.mean) / self.std
        with torch.no_grad():
            out = self._run(x)
        return out * self.std + self.mean

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        from pairless.predict import predict_tiled

        return predict_tiled(
            self.net, x, tile=self.tile, overlap=self.overlap, tta=self.tta, multiple=self.net.multiple
        )


def load_denoiser(config: dict, weights: dict[str, torch.Tensor], *, tile: int = 256, overlap: int = 32, tta: bool = False) -> N2VDenoiser:
    """Rebuild the denoiser of a model folder (``pairless.modelio``'s loader hook)."""
    settings = N2VConfig.from_dict({k: v for k, v in config.items() if k in N2VConfig.model_fields})
    net = _make_net(settings)
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise PairlessError(
            f"the model weights do not match its config.yaml ({str(err).splitlines()[0]}); the model folder is "
            f"damaged: train the model again"
        ) from None
    norm = config["normalisation"]
    return N2VDenoiser(net, mean=float(norm["mean"]), std=float(norm["std"]), tile=tile, overlap=overlap, tta=tta)

